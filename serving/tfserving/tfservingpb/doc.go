// Package tfservingpb is the Go code of TensorFlow Serving's protos
// (serving/tfserving/proto/tensorflow_serving): the
// tensorflow.serving.PredictionService and ModelService services, their
// messages, and the model server's config protos (ModelServerConfig,
// BatchingParameters, ...). TensorFlow's own types are graft's packages.
// Regenerate with scripts/generate-proto.sh.
package tfservingpb
