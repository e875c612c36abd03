package main

// TensorFlow writes start-up lines ("oneDNN custom operations are on", the
// absl "All log messages before absl::InitializeLog()" warning) from
// libtensorflow's static initializers, which run before any Go code and do
// not honour TF_CPP_MIN_LOG_LEVEL; later it logs at INFO at a level it read
// once, during those initializers.
//
// The executable's .preinit_array runs before every shared library's
// initializers: there gotflow points stderr at an in-memory file. The
// executable's own constructor, which runs after libtensorflow's
// initializers and before Go starts, puts stderr back and replays the
// ERROR and FATAL lines the initializers wrote (INFO and WARNING lines are
// dropped), then lowers absl's log level to ERROR so that TensorFlow's
// INFO and WARNING lines stay hidden for the rest of the run, as
// TF_CPP_MIN_LOG_LEVEL=2 would. If an initializer crashes (SIGABRT,
// SIGSEGV, ...) in between, everything it wrote is copied to stderr before
// the signal takes its course. main then sets TF_CPP_MIN_LOG_LEVEL=2 in
// the environment, for the processes gotflow starts.
//
// Nothing is hidden when the user asks for TensorFlow's logs: -v (or
// -v=true) anywhere on the command line, or TF_CPP_MIN_LOG_LEVEL set to 0.
// With TF_CPP_MIN_LOG_LEVEL set to another value, only the start-up lines
// are hidden and TensorFlow honours that value.

/*
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

static int gotflow_saved_stderr = -1;
static int gotflow_capture = -1;
static int gotflow_level_set = 0;
static int gotflow_quiet = 0;
// gotflow_log_path says how TensorFlow's later logging was quieted: 0 not
// at all (asked for, or nothing to do), 1 absl::SetMinLogLevel, 2 only the
// environment (no known absl symbol in this libtensorflow).
static int gotflow_log_path = 0;

static const int gotflow_signals[] = {SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE};
#define GOTFLOW_NSIG (sizeof gotflow_signals / sizeof gotflow_signals[0])
static struct sigaction gotflow_old_actions[GOTFLOW_NSIG];

static int gotflow_true(const char *v) {
	return strcmp(v, "1") == 0 || strcasecmp(v, "t") == 0 || strcasecmp(v, "true") == 0;
}

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
		if (a[0] != '-') continue;
		a += a[1] == '-' ? 2 : 1;
		if (strcmp(a, "v") == 0) return 1;
		if (strncmp(a, "v=", 2) == 0 && gotflow_true(a + 2)) return 1;
	}
	return 0;
}

// gotflow_copy_capture writes what was captured to fd, all of it or only
// the ERROR and FATAL lines (absl's "E1205 ..." and "F1205 ..."). Only
// async-signal-safe calls: it also runs from the crash handler.
static void gotflow_copy_capture(int fd, int errors_only) {
	char buf[4096];
	char line[1024];
	size_t n = 0;
	int keep = -1; // -1: start of a line, undecided
	off_t off = 0;
	for (;;) {
		ssize_t got = pread(gotflow_capture, buf, sizeof buf, off);
		if (got <= 0) break;
		off += got;
		if (!errors_only) {
			for (ssize_t w = 0; w < got;) {
				ssize_t k = write(fd, buf + w, got - w);
				if (k <= 0) return;
				w += k;
			}
			continue;
		}
		for (ssize_t i = 0; i < got; i++) {
			char c = buf[i];
			if (keep < 0) keep = (c == 'E' || c == 'F');
			if (keep && n < sizeof line) line[n++] = c;
			if (c == '\n') {
				if (keep && n > 0) {
					(void)!write(fd, line, n);
					if (line[n - 1] != '\n') (void)!write(fd, "\n", 1); // a line cut at its buffer
				}
				n = 0;
				keep = -1;
			}
		}
	}
	if (keep > 0 && n > 0) (void)!write(fd, line, n);
}

static void gotflow_crash(int sig) {
	if (gotflow_saved_stderr >= 0) {
		dup2(gotflow_saved_stderr, 2);
		gotflow_copy_capture(2, 0);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static void gotflow_quiet_tf_start(int argc, char **argv, char **envp) {
	if (gotflow_wants_tf_logs(argc, argv, envp)) return;
	gotflow_quiet = 1;
	if (fcntl(2, F_GETFD) < 0) return; // no stderr: nothing to protect
	int cap = memfd_create("gotflow-tf-start", MFD_CLOEXEC);
	if (cap < 0) return;
	int saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
	if (saved < 0) {
		close(cap);
		return;
	}
	gotflow_saved_stderr = saved;
	gotflow_capture = cap;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = gotflow_crash;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < GOTFLOW_NSIG; i++) sigaction(gotflow_signals[i], &sa, &gotflow_old_actions[i]);
	if (dup2(cap, 2) < 0) {
		for (size_t i = 0; i < GOTFLOW_NSIG; i++) sigaction(gotflow_signals[i], &gotflow_old_actions[i], NULL);
		close(saved);
		close(cap);
		gotflow_saved_stderr = gotflow_capture = -1;
	}
}

__attribute__((section(".preinit_array"), used))
static void (*gotflow_preinit)(int, char **, char **) = gotflow_quiet_tf_start;

// absl's SetMinLogLevel, under the inline namespaces of the absl releases
// TensorFlow has shipped with.
static const char *gotflow_absl_symbols[] = {
	"_ZN4absl12lts_2025081414SetMinLogLevelENS0_18LogSeverityAtLeastE",
	"_ZN4absl12lts_2025051214SetMinLogLevelENS0_18LogSeverityAtLeastE",
	"_ZN4absl12lts_2025012714SetMinLogLevelENS0_18LogSeverityAtLeastE",
	"_ZN4absl12lts_2024072214SetMinLogLevelENS0_18LogSeverityAtLeastE",
	"_ZN4absl12lts_2024011614SetMinLogLevelENS0_18LogSeverityAtLeastE",
	"_ZN4absl12lts_2023080214SetMinLogLevelENS0_18LogSeverityAtLeastE",
	"_ZN4absl14SetMinLogLevelENS_18LogSeverityAtLeastE",
};

__attribute__((constructor))
static void gotflow_quiet_tf_end(void) {
	if (gotflow_saved_stderr >= 0) {
		dup2(gotflow_saved_stderr, 2);
		close(gotflow_saved_stderr);
		gotflow_saved_stderr = -1;
		for (size_t i = 0; i < GOTFLOW_NSIG; i++) sigaction(gotflow_signals[i], &gotflow_old_actions[i], NULL);
		gotflow_copy_capture(2, 1);
		close(gotflow_capture);
		gotflow_capture = -1;
	}
	if (!gotflow_quiet || gotflow_level_set) return;
	gotflow_log_path = 2;
	for (size_t i = 0; i < sizeof gotflow_absl_symbols / sizeof gotflow_absl_symbols[0]; i++) {
		void (*set_min)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, gotflow_absl_symbols[i]);
		if (set_min != NULL) {
			set_min(2); // absl::LogSeverityAtLeast::kError
			gotflow_log_path = 1;
			break;
		}
	}
}

static int gotflow_tf_log_path(void) { return gotflow_log_path; }
*/
import "C"

import "os"

// quietTFLogs puts TF_CPP_MIN_LOG_LEVEL=2 in Go's environment (which was
// copied before the constructor above ran) when gotflow chose that level,
// so that the processes it starts log the same way.
func quietTFLogs() {
	if C.gotflow_tf_log_path() != 0 {
		os.Setenv("TF_CPP_MIN_LOG_LEVEL", "2")
	}
}

// tfLogPath reports how TensorFlow's logging was quieted at start-up: 0
// not at all, 1 through absl, 2 through the environment only.
func tfLogPath() int { return int(C.gotflow_tf_log_path()) }
