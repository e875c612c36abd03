"""The executor side of GotflowModel.transform: a scalar-iterator Arrow UDF
over the feed columns that runs one ``gotflow predict --ipc --outputs-only``
child per task, fed by a writer thread while the task reads the
predictions back."""

import queue
import socket
import threading
from typing import Iterator, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from ._binary import child_env, find_binary
from ._child import Child, ChildError

_END = object()
# How long the reader waits for the writer's record of a batch it sent (the
# writer records a batch before sending it, so this only passes on a bug or
# when the child writes rows it was never sent).
_PENDING_TIMEOUT = 60.0


def _task_label():
    from pyspark import TaskContext

    tc = TaskContext.get()
    if tc is None:
        return "driver", 0
    return f"stage {tc.stageId()} partition {tc.partitionId()} attempt {tc.attemptNumber()}", tc.cpus()


def _argmax(values, width):
    """Index of the largest of each row's width values, as float64."""
    import numpy as np

    a = values.to_numpy(zero_copy_only=False).reshape(-1, width)
    return pa.array(a.argmax(axis=1).astype(np.float64))


class PartitionPredictor:
    """The body of the Arrow UDF: takes the iterator of one task's feed
    batches (an Arrow array per feed column) and yields, for each of them in
    order, an array of as many rows with the predictions.

    cfg keys: binary, library_path, model, tags, signature, batch_size,
    threads, feeds [(stream column, model input, source column, width, --map options)],
    outputs [(model output, stream column, arrow type)], argmax (index in
    outputs of the output it reads, width) or None, result_type (the Arrow type
    of what the UDF returns: the single output's type, or a struct of the
    outputs, then the argmax, in that order).
    """

    def __init__(self, cfg):
        self.cfg = cfg

    def argv(self, exe, threads):
        c = self.cfg
        argv = [exe, "predict", "--ipc", "--outputs-only", "--model", c["model"], "--batch-size", str(c["batch_size"])]
        if c.get("tags"):
            argv += ["--tags", c["tags"]]
        if c.get("signature"):
            argv += ["--signature", c["signature"]]
        if threads:
            argv += ["--threads", str(threads)]
        for feed in c["feeds"]:
            name, model_input, opts = feed[0], feed[1], feed[4] if len(feed) > 4 else ""
            argv += ["--map", f"{name}={model_input} {opts}".strip()]
        for out, name, _ in c["outputs"]:
            argv += ["--out-map", f"{out}={name}"]
        return argv

    def udf_function(self):
        """The function to wrap with ``arrow_udf``; its type hints make it a
        scalar iterator UDF (one argument per feed column)."""
        if len(self.cfg["feeds"]) == 1:
            def predict(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
                return self(batches)
        else:
            def predict(batches: Iterator[Tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
                return self(batches)
        predict.__name__ = predict.__qualname__ = "gotflow_predict"
        return predict

    def __call__(self, batches):
        it = iter(batches)
        first = next(it, None)
        if first is None:  # an empty partition starts no process
            return
        c = self.cfg
        label, cpus = _task_label()
        threads = c.get("threads") or cpus or 0
        exe = find_binary(c.get("binary"))
        env = child_env(c.get("library_path"), {"GOTFLOW_SPARK_TASK": label})
        child = Child(self.argv(exe, threads), env, f"gotflow predict --ipc (pid ?, {label}, host {socket.gethostname()})")
        child.what = child.what.replace("pid ?", f"pid {child.pid}")
        pending = queue.Queue()
        failure = []
        writer = threading.Thread(target=self._write, args=(first, it, child, pending, failure),
                                  name="gotflow stdin writer", daemon=True)
        writer.start()
        try:
            yield from self._read(child, pending, failure)
        finally:
            child.stop()
            writer.join(timeout=30)

    def _write(self, first, rest, child, pending, failure):
        """Writer thread: sends every batch of feed columns to the child's
        stdin, recording the row count of each non-empty one (before sending
        it) for the reader."""
        c = self.cfg
        names = [f[0] for f in c["feeds"]]
        w = None
        try:
            b = first
            while b is not None:
                cols = list(b) if isinstance(b, (tuple, list)) else [b]
                if len(cols) != len(names):
                    raise ValueError(f"the UDF got {len(cols)} column(s) for {len(names)} model input(s)")
                for col, (_, model_input, source, width, *_) in zip(cols, c["feeds"]):
                    if width is not None and pa.types.is_list(col.type) and len(col) > 0:
                        _check_width(col, source, model_input, width)
                proj = pa.RecordBatch.from_arrays(cols, names=names)
                if proj.num_rows:
                    pending.put(proj.num_rows)
                if w is None:
                    w = pa.ipc.new_stream(child.proc.stdin, proj.schema)
                w.write_batch(proj)
                b = next(rest, None)
            w.close()
        except (BrokenPipeError, ConnectionResetError, pa.ArrowIOError, OSError) as e:
            if child.proc.poll() is None and not isinstance(e, (BrokenPipeError, ConnectionResetError)):
                failure.append(e)
        except BaseException as e:  # the input failed (or is bad): stop the child
            failure.append(e)
            child.proc.kill()
        finally:
            try:
                child.proc.stdin.close()
            except OSError:
                pass
            pending.put(_END)

    def _result(self, parts):
        """The UDF's array for one input batch from the child's output
        slices that cover its rows."""
        c = self.cfg
        cols = []
        for i, (_, _, t) in enumerate(c["outputs"]):
            pieces = [p.column(i) for p in parts]
            a = pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)
            cols.append(a if a.type == t else a.cast(t))
        if c.get("argmax"):
            j, width = c["argmax"]
            cols.append(_argmax(cols[j].flatten(), width))
        rt = c["result_type"]
        if not pa.types.is_struct(rt):
            return cols[0]
        return pa.StructArray.from_arrays(cols, fields=[rt.field(k) for k in range(rt.num_fields)])

    @staticmethod
    def _next_count(pending):
        try:
            n = pending.get(timeout=_PENDING_TIMEOUT)
        except queue.Empty:
            raise ChildError("gotflow returned rows it was not sent") from None
        if n is _END:
            raise ChildError("gotflow returned more rows than it was sent")
        return n

    def _read(self, child, pending, failure):
        """Yields one array per non-empty input batch, of exactly its row
        count, cut from the child's output stream (which keeps the input's
        row order); empty input batches get no array."""
        want, parts, have = None, [], 0
        try:
            reader = pa.ipc.open_stream(child.proc.stdout)
            for out in reader:
                n = out.num_rows
                if len(out.schema) != len(self.cfg["outputs"]):
                    raise ChildError(f"gotflow returned {len(out.schema)} column(s), "
                                     f"want {len(self.cfg['outputs'])}")
                o = 0
                while o < n:
                    if want is None:
                        want, parts, have = self._next_count(pending), [], 0
                    k = min(want - have, n - o)
                    parts.append(out.slice(o, k))
                    have += k
                    o += k
                    if have == want:
                        yield self._result(parts)
                        want, parts, have = None, [], 0
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError, ChildError) as e:
            if failure:
                raise failure[0]
            try:
                child.proc.wait(timeout=10)
            except Exception:
                pass
            raise child.error(f"gotflow failed while predicting ({e})") from None
        try:
            code = child.proc.wait(timeout=60)
        except Exception:
            raise child.error("gotflow did not exit after its output ended") from None
        if failure:
            raise failure[0]
        if code != 0:
            raise child.error("gotflow failed while predicting")
        missing = 0 if want is None else want - have
        while True:
            try:
                n = pending.get(timeout=_PENDING_TIMEOUT)
            except queue.Empty:
                raise child.error("the feed writer did not finish after gotflow's output ended") from None
            if n is _END:
                break
            missing += n
        if missing:
            raise child.error(f"gotflow returned {missing} fewer rows than it was sent")


def _check_width(col, source, model_input, width):
    """Raises ValueError when a list column's rows do not all hold width
    values."""
    lengths = pc.list_value_length(col)
    mm = pc.min_max(lengths)
    lo, hi = mm["min"].as_py(), mm["max"].as_py()
    if lo is None:
        raise ValueError(f"column {source!r} (model input {model_input!r}) holds null rows; fill them first")
    if lo != width or hi != width:
        bad = lo if lo != width else hi
        raise ValueError(f"column {source!r} has rows of {bad} values, but model input {model_input!r} "
                         f"wants {width} values a row (a vector or array size mismatch)")
    if col.null_count:
        raise ValueError(f"column {source!r} (model input {model_input!r}) holds null rows; fill them first")
