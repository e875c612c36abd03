package main

// The command table: every verb's name, one-line summary, usage lines and
// description, in the order `gotflow help` lists them. Each verb's run
// function lives in the file of the same name; its flags are defined there
// and printed after the description by -h.
var commandTable = []command{
	{
		name:     "train",
		summary:  "train a model bundle on Arrow/Parquet/CSV data and export it",
		synopsis: []string{"--bundle BUNDLE --data DATA [--map SPEC]... [--export DIR] [flags]"},
		about: `Trains BUNDLE (made by 'gotflow convert') on DATA (.parquet, .arrow/.ipc/
.feather, .arrows, .csv, or a directory or glob of them), streaming it, in
this process or with --cluster processes on one parameter-server shard per
--num-ps and one 'gotflow worker' per --workers, and exports the trained
model. --map SPEC feeds an input from a column: 'COLUMN=INPUT [dtype=T]
[shape=D,..] [fill=V] [cast] [len=N] [pad=V]'; without it each input is fed
from the column of its name.`,
		run: runTrain,
	},
	{
		name:    "worker",
		summary: "run one training worker of a job (train --cluster processes, or a TFJob replica)",
		synopsis: []string{
			"--job MODELDIR/job.json [flags]",
			"[train's flags]   (with TF_CONFIG naming the cluster)",
		},
		about: `Started by 'gotflow train --cluster processes' with --job, or as a replica
of a TFJob with TF_CONFIG set, where train's flags describe the job.`,
		run: runWorker,
	},
	{
		name:     "ps",
		summary:  "run one parameter-server shard",
		synopsis: []string{"[--listen HOST:PORT] [--shard I/N] [--mode MODE] [--optimizer NAME] [--optimizer-options JSON|@FILE] [flags]"},
		about: `Serves one shard of the parameter server until SIGTERM: gRPC, and the bulk
transport for tensors on the same port. The bound address is printed on
stdout.`,
		run: runPS,
	},
	{
		name:     "evaluate",
		summary:  "compute a trained model's loss and metrics over labelled data",
		synopsis: []string{"--model EXPORT --data DATA [--where COLUMN=VALUE] [--map SPEC]... [flags]"},
		run:      runEvaluate,
	},
	{
		name:    "predict",
		summary: "run a model over Parquet/Arrow/CSV data, appending its outputs",
		synopsis: []string{
			"--model MODEL --data DATA --output OUT [flags]",
			"--model MODEL --ipc [flags] < in.arrows > out.arrows",
		},
		about: `Runs MODEL over every row of DATA (.parquet, .arrow/.ipc/.feather, .arrows,
.csv, or a directory or glob of them) and writes the rows with the model's
outputs appended as columns to OUT (.parquet, .arrow/.ipc/.feather or .arrows).
OUT appears only when complete. Without --map, each input is fed from the
column of the same name; without --out-map, every output is appended under
its own name.

With --ipc, an Arrow IPC stream is read from stdin and one written to stdout,
batch by batch as results come (the mode gotflow_spark's GotflowModel runs);
errors go to stderr and the exit status is non-zero.`,
		run: runPredict,
	},
	{
		name:    "serve",
		summary: "serve SavedModels over TF Serving's REST and gRPC APIs, KServe V2 and Arrow Flight",
		synopsis: []string{
			"--model_base_path DIR [--model_name NAME] [--port P] [--rest_api_port Q] [flags]",
			"--model_config_file FILE [flags]",
		},
		about: `Serves the newest version (a numbered subdirectory holding a SavedModel) of
each model, and the versions that appear later, with TF Serving's flags:
gRPC (TF Serving's PredictionService and ModelService, KServe V2's
GRPCInferenceService, Arrow Flight, gRPC health) on --port; REST (TF
Serving's /v1, KServe V2's /v2, /metrics, /healthz, /readyz) on
--rest_api_port. The bound addresses are printed on stdout. SIGTERM
drains the requests in flight (--drain_timeout), then exits.`,
		run: runServe,
	},
	{
		name:    "convert",
		summary: "convert a Keras model, TF1 graph function or SavedModel into a trainable bundle",
		synopsis: []string{
			"keras MODEL --loss LOSS [--metric M]... [--input name:dtype:shape]... [--label name:dtype:shape]... -o BUNDLE",
			"tf1 MODULE.py:FUNCTION [--input x:0]... [--label y:0]... [--output name=tensor]... -o BUNDLE",
			"savedmodel DIR --loss LOSS [--signature KEY] [--label name:dtype:shape] -o BUNDLE",
		},
		about: `MODEL is a .keras file or path/to/module.py:function returning a keras.Model.
The bundle directory gets manifest.json, train.pb, infer.pb, eval.pb and
weights.safetensors (see loader/schema/bundle-v1.schema.json).

The converter is carried in this binary and runs with $GOTFLOW_PYTHON, else
the .venv of a gotflow checkout around it, else python3 on PATH; that Python
needs tensorflow (or tensorflow-cpu) and numpy. Run 'gotflow convert keras
-h' for all flags of a source.`,
		run: runConvert,
	},
	{
		name:     "inspect",
		summary:  "show a model's tags, signatures, inputs and outputs",
		synopsis: []string{"MODEL [--json] [flags]"},
		about: `MODEL is a SavedModel directory, a frozen GraphDef (.pb), a TF1 checkpoint
(directory, prefix or .meta file) or a gotflow model bundle.`,
		run: runInspect,
	},
	{
		name:    "tune",
		summary: "search hyper-parameters: trials of train over a Katib-shaped space, with early stopping",
		synopsis: []string{
			"--space SPACE --study DIR --bundle BUNDLE --data DATA [train's flags]",
			"--resume DIR",
		},
		run: runTune,
	},
	{
		name:    "ensemble",
		summary: "train N models from seeds (or bootstrap samples), or take a study's top K, and export them as one",
		synopsis: []string{
			"--members N -o DIR [train's flags]",
			"--from-study DIR --top K -o DIR",
		},
		run: runEnsemble,
	},
	{
		name:    "version",
		summary: "print gotflow's, TensorFlow's and the bindings' versions",
		run:     runVersion,
	},
}

func init() {
	for _, c := range commandTable {
		if _, dup := commands[c.name]; dup {
			panic("gotflow: command listed twice: " + c.name)
		}
		commands[c.name] = c
	}
}
