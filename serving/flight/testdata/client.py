"""A pyarrow Flight client of gotflow's serving/flight service.

Usage: client.py grpc://HOST:PORT TF2_EXPECTED_JSON

It talks to a server serving TF's half_plus_two (version 123), the
tf2_savedmodel fixture as "tf2" (whose inputs it reads from the
fixture's expected.json) and the test's "scale" model, and prints one JSON object with what it
got: get_schema, do_exchange of several batches, get_flight_info and
do_get of its ticket, do_put then do_get, and a bad batch's error.
"""

import base64
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.flight as fl


def fields(schema):
    return [f"{f.name}: {f.type}" for f in schema]


def main():
    client = fl.connect(sys.argv[1])
    out = {}
    hpt = fl.FlightDescriptor.for_path("half_plus_two")

    schema = client.get_schema(hpt).schema
    out["schema"] = [
        {
            "name": f.name,
            "type": str(f.type),
            "metadata": {k.decode(): v.decode() for k, v in (f.metadata or {}).items()},
        }
        for f in schema
    ]

    # do_exchange: plain float32 columns, one answer per batch, in order.
    batches = [[0, 1, 2], [3.5], [-4, 10]]
    in_schema = pa.schema([("x", pa.float32())])
    writer, reader = client.do_exchange(hpt)
    out["exchange"] = []
    with writer:
        writer.begin(in_schema)
        for b in batches:
            writer.write_batch(pa.record_batch([pa.array(b, pa.float32())], schema=in_schema))
            chunk = reader.read_chunk()
            out["exchange"].append({
                "y": chunk.data.column("y").to_pylist(),
                "metadata": json.loads(chunk.app_metadata.to_pybytes()),
            })
        writer.done_writing()
        try:
            reader.read_chunk()
            raise SystemExit("an answer too many")
        except StopIteration:
            pass

    # Two columns, one of them a fixed-size list, from numpy, by CMD.
    with open(sys.argv[2]) as f:
        case = next(c for c in json.load(f)["cases"] if c["name"] == "serving_default_batch5")
    k = np.array(case["feeds"]["k"]["data"], dtype=np.int64)
    x = np.array(case["feeds"]["x"]["data"], dtype=np.float32).reshape(case["feeds"]["x"]["shape"])
    tf2 = fl.FlightDescriptor.for_command(json.dumps({"model": "tf2", "signature": "serving_default"}))
    tf2_schema = pa.schema([("k", pa.int64()), ("x", pa.list_(pa.float32(), 4))])
    writer, reader = client.do_exchange(tf2)
    total, y = [], []
    with writer:
        writer.begin(tf2_schema)
        for lo, hi in [(0, 2), (2, 5)]:
            xs = pa.FixedSizeListArray.from_arrays(pa.array(x[lo:hi].reshape(-1)), 4)
            writer.write_batch(pa.record_batch([pa.array(k[lo:hi]), xs], schema=tf2_schema))
            chunk = reader.read_chunk()
            total += chunk.data.column("total").to_pylist()
            y += chunk.data.column("y").to_pylist()
        writer.done_writing()
    out["exchange_tf2"] = {"total": total, "y": y}

    # A rank-3 input as Arrow's fixed_shape_tensor extension (from a numpy
    # array) and an input of unknown inner dimension as a list.
    scale = fl.FlightDescriptor.for_path("scale")
    a = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    a_col = pa.FixedShapeTensorArray.from_numpy_ndarray(a)
    b_col = pa.array([[1, 2, 3], [4, 5, 6]], pa.list_(pa.int32()))
    batch = pa.record_batch([a_col, b_col], names=["a", "b"])
    writer, reader = client.do_exchange(scale)
    with writer:
        writer.begin(batch.schema)
        writer.write_batch(batch)
        chunk = reader.read_chunk()
        writer.done_writing()
    out["exchange_tensor"] = {
        "a2": chunk.data.column("a2").to_pylist(),
        "b1": chunk.data.column("b1").to_pylist(),
        "shapes": json.loads(chunk.app_metadata.to_pybytes())["shapes"],
    }

    info = client.get_flight_info(hpt)
    md = json.loads(info.app_metadata)
    out_schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(md["output_schema"])))
    ep = info.endpoints[0]
    ticket_table = client.do_get(ep.ticket).read_all()
    out["info"] = {
        "model": md["model"],
        "version": md["version"],
        "output_schema": fields(out_schema),
        "location": ep.locations[0].uri.decode(),
        "ticket_schema": fields(ticket_table.schema),
        "ticket_rows": ticket_table.num_rows,
    }

    # do_put a bulk job, then do_get its predictions by the ticket.
    writer, meta_reader = client.do_put(hpt, in_schema)
    writer.write_batch(pa.record_batch([pa.array([0, 1], pa.float32())], schema=in_schema))
    writer.write_batch(pa.record_batch([pa.array([2, 3], pa.float32())], schema=in_schema))
    writer.done_writing()
    put = json.loads(meta_reader.read().to_pybytes())
    writer.close()
    table = client.do_get(fl.Ticket(put["ticket"])).read_all()
    out["put"] = {"rows": put["rows"], "y": table.column("y").to_pylist()}

    # A null is refused with a message naming the column and row.
    writer, reader = client.do_exchange(hpt)
    try:
        writer.begin(in_schema)
        writer.write_batch(pa.record_batch([pa.array([1, None], pa.float32())], schema=in_schema))
        reader.read_chunk()
        out["error"] = {"type": "", "message": "no error"}
    except Exception as e:  # noqa: BLE001 - the type is what is checked
        out["error"] = {"type": type(e).__name__, "message": str(e)}
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the stream failed already
            pass

    client.close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
