package main

// TensorFlow writes start-up lines ("oneDNN custom operations are on", the
// absl "All log messages before absl::InitializeLog()" warning) from
// libtensorflow's static initializers, which run before any Go code and do
// not honour TF_CPP_MIN_LOG_LEVEL. The executable's .preinit_array runs
// before every shared library's initializers, so gotflow points stderr at
// /dev/null there and puts it back in the executable's own constructor,
// which runs after libtensorflow's initializers and before Go starts. The
// same hook defaults TF_CPP_MIN_LOG_LEVEL to 2 (warnings and errors only)
// for the rest of the run.
//
// Nothing is hidden when the user asks for TensorFlow's logs: a -v flag
// anywhere on the command line, or TF_CPP_MIN_LOG_LEVEL=0.

/*
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int gotflow_saved_stderr = -1;
static int gotflow_quiet = 0;

static int gotflow_level_set = 0;

// gotflow_wants_tf_logs reads the environment from envp: libc's environ is
// not set up yet when .preinit_array runs.
static int gotflow_wants_tf_logs(int argc, char **argv, char **envp) {
	static const char key[] = "TF_CPP_MIN_LOG_LEVEL=";
	for (char **e = envp; e != NULL && *e != NULL; e++) {
		if (strncmp(*e, key, sizeof key - 1) == 0) {
			gotflow_level_set = 1;
			if (strcmp(*e + sizeof key - 1, "0") == 0) return 1;
		}
	}
	for (int i = 1; i < argc && argv != NULL && argv[i] != NULL; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) break;
		if (strcmp(a, "-v") == 0 || strcmp(a, "--v") == 0 ||
		    strcmp(a, "-v=true") == 0 || strcmp(a, "--v=true") == 0) return 1;
	}
	return 0;
}

static void gotflow_quiet_tf_start(int argc, char **argv, char **envp) {
	if (gotflow_wants_tf_logs(argc, argv, envp)) return;
	gotflow_quiet = 1;
	if (fcntl(2, F_GETFD) < 0) return; // no stderr: nothing to protect
	int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (devnull < 0) return;
	int saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
	if (saved < 0) {
		close(devnull);
		return;
	}
	if (dup2(devnull, 2) < 0) {
		close(saved);
		close(devnull);
		return;
	}
	close(devnull);
	gotflow_saved_stderr = saved;
}

__attribute__((section(".preinit_array"), used))
static void (*gotflow_preinit)(int, char **, char **) = gotflow_quiet_tf_start;

__attribute__((constructor))
static void gotflow_quiet_tf_end(int argc, char **argv, char **envp) {
	(void)argc;
	(void)envp;
	// environ exists now (it did not in .preinit_array).
	if (gotflow_quiet && !gotflow_level_set) {
		setenv("TF_CPP_MIN_LOG_LEVEL", "2", 0);
		void (*set_min)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "_ZN4absl12lts_2025081414SetMinLogLevelENS0_18LogSeverityAtLeastE");
		if (set_min != NULL) {
			set_min(1);
		} else if (argv != NULL) {
			// Another TensorFlow (another absl namespace): start again
			// with the level in the environment, where TensorFlow's
			// initializers read it. execv keeps the process id.
			execv("/proc/self/exe", argv);
		}
	}
	if (gotflow_saved_stderr < 0) return;
	dup2(gotflow_saved_stderr, 2);
	close(gotflow_saved_stderr);
	gotflow_saved_stderr = -1;
}
*/
import "C"
