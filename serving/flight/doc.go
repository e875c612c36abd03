// Package flight is the Arrow Flight front end of a serving.Server:
// clients send record batches of inputs and get record batches of
// predictions, rows aligned, over the server's gRPC port.
//
//	srv, err := serving.NewServer(ctx, cfg)
//	svc := flight.Register(srv) // before srv.Serve
//	defer svc.Close()
//	err = srv.Serve(grpcLis, httpLis)
//
// From Python (pyarrow):
//
//	client = pyarrow.flight.connect("grpc://host:port")
//	d = pyarrow.flight.FlightDescriptor.for_path("my_model")
//	writer, reader = client.do_exchange(d)
//	writer.begin(schema)
//	for batch in batches:
//	    writer.write_batch(batch)
//	    predictions = reader.read_chunk().data
//	writer.done_writing()
//
// # Descriptors
//
// A flight is one signature of one model. Its descriptor is a PATH
// ["<model>"] (the newest version) or ["<model>", "<version>"], or a CMD
// holding the JSON of a Command, for what a path cannot say:
//
//	{"model": "m", "version": 3, "label": "stable", "signature": "classify", "outputs": ["probs"]}
//
// model is required; version (a positive number) or label picks a
// version, not both; signature defaults to serving_default; outputs
// filters the signature's outputs (default all, always in the
// signature's order). Unknown keys are refused.
//
// # Columns
//
// Every signature tensor is a column named by its alias, one row per
// example (the tensor's first dimension), encoded from its signature
// shape:
//
//   - rank 1 ([-1]): a primitive column;
//   - every inner dimension known ([-1, 28, 28, 1]): fixed_size_list of
//     the element type, as wide as a row's values (784), row-major;
//   - an inner dimension or the rank unknown: list of the element type.
//
// Element types: float32, float64, float16, int8 to int64, uint8 to
// uint64 and bool are Arrow's; string tensors are binary; bfloat16 is the
// uint16 of its bits. Each field carries the metadata MetaDType (the
// TensorFlow type) and MetaShape (a row's shape, -1 for unknown
// dimensions, absent for an unknown rank). Scalar tensors cannot be rows:
// a signature with a scalar input, or a scalar output that the outputs
// filter does not leave out, fails with FAILED_PRECONDITION.
//
// Input columns may come in more forms: a fixed-size list, a list or a
// large list (every row of a batch the same length) or, when a row holds
// one value, a primitive column; fixed-size lists may be nested (a
// [-1, 2, 3] input takes fixed_size_list<fixed_size_list<float32>[3]>[2]
// as well as fixed_size_list<float32>[6]), and an extension column is
// read as its storage. A row's shape is, in this order: the nesting's
// when it has the signature's rank and fits it; the field's MetaShape
// metadata or, for Arrow's canonical arrow.fixed_shape_tensor extension
// (without permutation), its shape; the signature's, with one unknown
// dimension worked out from the row's length. A float32 input also takes
// float64 values, cast to float32 as IEEE 754 does (rounding to nearest;
// values beyond float32's range become ±Inf); a string input also takes string, large_binary and
// large_string. Every other type must be exact. Nulls are refused at
// every level. The columns must be exactly the signature's inputs, in any
// order.
//
// Output columns follow the encoding above; with list columns the
// batch's app_metadata gives each output's shape.
//
// # Calls
//
// GetSchema returns the flight's input schema: the schema to write.
//
// GetFlightInfo returns the same schema as the FlightInfo's schema, and
// in its app_metadata the JSON of an InfoMetadata: model, resolved
// version, signature, method, the signature's tensors and the output
// schema (serialized as flight.SerializeSchema does, base64 in the
// JSON; pyarrow.ipc.read_schema reads it). Its one endpoint's location is
// flight.LocationReuseConnection (this server) and its ticket, given to
// DoGet, streams the input schema with no rows. Sizes are -1.
//
// ListFlights sends one FlightInfo per model with a version available:
// its serving_default signature, or its first signature by key (then
// under a CMD descriptor). The criteria are ignored.
//
// DoExchange reads the descriptor and schema from the stream's first
// message and checks the schema before any batch comes. For every
// record batch written it runs one Predict (with Request.NoBatch when
// the batch has at least Server.MaxBatchSize rows, so that large batches
// skip the batcher) and writes one record batch of the outputs, the same
// rows in the same order, with a BatchMetadata JSON as app_metadata
// (model, version that ran, signature, rows, output shapes). Up to
// WithInFlight batches of a stream run at once (default 2), answered in
// the order they came, each on the version the descriptor names when it
// runs: a reload during a stream moves its later batches to the new
// version, and their BatchMetadata says so. Empty batches get empty answers without running the
// model. A batch is one gRPC message: serving.Config.MaxRequestBytes
// bounds its size.
//
// DoPut is a bulk job: its batches are predicted as they arrive and the
// predictions are kept; its one PutResult carries the JSON of a
// PutMetadata, whose ticket DoGet takes to stream them back (with the
// same app_metadata as DoExchange). The predictions of all jobs, with
// those of uploads in progress, are bounded by WithJobLimit (default 1
// GiB): the upload that would pass it fails with RESOURCE_EXHAUSTED and
// keeps nothing. A job is dropped when its DoGet starts (a ticket works
// once, even if that download fails) or WithJobTTL after its upload ended
// (default 10 minutes).
//
// PollFlightInfo, DoAction and ListActions are not implemented. Handshake
// accepts every client: the server's bearer token, when set, guards every
// call (Handshake included) through the gRPC "authorization" header.
//
// # Ownership
//
// Input batches are read from the gRPC messages and copied once into the
// request's tensors; the stream's buffers are not kept after the batch is
// answered. Output columns share the response tensors' memory (bool bits
// and string offsets are built), and a job's predictions stay in memory
// until its DoGet ends, it expires or Close drops it. IPC readers and
// writers allocate from WithAllocator's allocator.
//
// # Concurrency
//
// A Service is safe for any number of concurrent calls; streams are
// independent, and a stream that fails does not affect the others.
// Within a stream batches are answered in order, one at a time: run more
// streams for more parallelism, or let small batches from many streams
// meet in the server's batcher. The job store takes one lock for each
// change. Close may be called at any time, more than once.
//
// # Errors
//
// Every call returns a gRPC status; the message names the column, row,
// model, version and signature concerned, and for a wrong column the type
// and shape that the input takes. INVALID_ARGUMENT: a malformed
// descriptor, Command or ticket, an unknown, missing or repeated column, a
// wrong type or row length, a null (column and row), ragged list rows,
// and the errors the model itself reports for its inputs. NOT_FOUND: an
// unknown model or version, an unknown, expired or used ticket.
// FAILED_PRECONDITION: an unknown signature, or tensors that cannot be
// rows. RESOURCE_EXHAUSTED: the job store's limit. Predict's other
// statuses (UNAVAILABLE while shutting down, DEADLINE_EXCEEDED, ...) pass
// through. pyarrow raises them as ArrowInvalid, FlightServerError and
// the like, with the message.
package flight
