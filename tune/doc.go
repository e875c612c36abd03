// Package tune searches hyper-parameters: a Study runs trials of a
// TFEstimator with parameters a sampler proposes, several at a time within
// a CPU budget, stops unpromising ones early, and keeps everything in a
// directory it resumes from.
//
// # Search space
//
// A space file (YAML or JSON) has the shape of a Kubeflow Katib
// Experiment's spec, with the same key names, so that a study can move to
// Katib (and a Katib Experiment file is read as its spec):
//
//	objective: {type: maximize, objectiveMetricName: val_accuracy, goal: 0.99}
//	algorithm: {algorithmName: tpe, algorithmSettings: [{name: random_state, value: "7"}]}
//	maxTrialCount: 16
//	parallelTrialCount: 2
//	maxFailedTrialCount: 3
//	timeBudget: 30m
//	parameters:
//	  - {name: learning_rate, parameterType: double, feasibleSpace: {min: "1e-4", max: "0.1", distribution: logUniform}}
//	  - {name: batch_size, parameterType: int, feasibleSpace: {min: 16, max: 128}}
//	  - {name: optimizer, parameterType: categorical, feasibleSpace: {list: [adam, sgd]}}
//	  - {name: bundle, parameterType: categorical, feasibleSpace: {list: [build/mlp64, build/mlp128]}}
//	earlyStopping: {algorithmName: asha, algorithmSettings: [{name: reduction_factor, value: "3"}]}
//
// A parameter is any TFEstimator field by its JSON name (learning_rate,
// batch_size, optimizer, optimizer_options as JSON text, mode, epochs,
// pull_every, ...), and bundle selects among bundles converted with
// different arguments. The objective is loss, val_loss, or a metric of the
// bundle with or without the val_ prefix. Space.Check names the key of
// every mistake.
//
// Algorithms: random (uniform, or uniform in log space for logUniform;
// trial i's draw depends only on the seed and i), grid (min, min+step, ...
// or, for logUniform, min, min·step, ...; int steps 1 by default) and tpe
// (Tree-structured Parzen Estimator, per parameter, after
// n_startup_trials random trials, default 10; gamma 0.25; 24 candidates).
//
// Early stopping: asha (asynchronous successive halving with Ray Tune's
// defaults: max_t 100, capped at the trials' epochs; grace_period 1;
// reduction_factor 4) stops a trial reaching a rung (grace·rf^k epochs)
// unless it is within the top 1/rf of the results recorded at that rung;
// median (grace_period 1, min_samples_required 3) stops a trial whose best
// result is worse than the median of the other trials' running means.
//
// # Study directory
//
// space.json (the space, defaults filled in), study.json (every trial:
// parameters, status, the objective after each epoch, best and final
// values, wall time, stop reason, error, export; and the scheduler's
// reports in order), trials.csv and trials.parquet (one row per trial,
// the parameters as params_<name> columns),
// trials/<id>/model and trials/<id>/export, tensorboard/<id>/, and best/,
// a copy of the export of the completed trial with the best final
// objective. A trial is written to study.json with its parameters before
// it starts, so a study killed at any moment and run again on its
// directory keeps its finished trials, runs the others again (each
// resuming from its model dir) and never makes a trial twice.
//
// # Ensembles
//
// Ensemble.Fit trains Members copies of an estimator, each from its own
// seed (its own order of the rows) or, with Bootstrap, on its own bootstrap
// sample, Parallel at a time; TopTrials picks a study's K best completed
// trials (best first). ExportEnsemble combines trained exports into one
// SavedModel (savedmodel.EnsembleGraph: the members' frozen graphs under
// member_i/ prefixes on shared input placeholders, and one
// serving_default signature that averages their outputs, their softmaxes,
// or counts their votes) with a tfmodel.json, so the ensemble serves,
// transforms and loads in Python TensorFlow like one model.
//
// # Ownership
//
// A Study reads Space and Base and never changes them; Run owns Dir (it
// holds study.lock there while it runs; a second Run on the same directory
// is refused, naming the holder). Result values are copies.
//
// # Concurrency
//
// Run runs up to parallelTrialCount trials at once, each an ordinary
// TFEstimator.Fit with IntraOpThreads = CPUs / (parallel × workers) unless
// Base sets it; OnEvent is called from the trials' goroutines, one call at
// a time. A Study must not be Run twice at once.
//
// # Errors
//
// A bad space, an objective metric no bundle reports, a val_ metric
// without a validation split, or a directory holding another space's study
// fail Run before any trial starts. A trial whose Fit fails is recorded as
// failed with its error; once more than maxFailedTrialCount failed, Run
// starts no more and returns an error naming the last one. A cancelled ctx
// ends Run with an error saying how to resume; the time budget ends it
// normally, with the running trials stopped.
package tune
