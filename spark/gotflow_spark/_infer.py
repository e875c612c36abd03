"""The executor side of GotflowModel.transform: one ``gotflow predict
--ipc`` child per task, fed by a writer thread while the task reads its
results."""

import os
import queue
import socket
import threading

import pyarrow as pa
import pyarrow.compute as pc

from ._binary import child_env, find_binary
from ._child import Child, ChildError

_END = object()


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
    """A picklable function for ``mapInArrow``: runs the model over one
    partition's record batches and yields them with the outputs appended.

    cfg keys: binary, library_path, model, tags, signature, batch_size,
    threads, feeds [(temp column, model input, source column, width)],
    outputs [(model output, column, arrow type)], argmax (column, source
    column, width) or None, keep (indices of the columns passed through).
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
        for temp, model_input, _, _ in c["feeds"]:
            argv += ["--map", f"{temp}={model_input}"]
        for out, col, _ in c["outputs"]:
            argv += ["--out-map", f"{out}={col}"]
        return argv

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
        """Writer thread: sends the feed columns of every batch to the
        child's stdin and queues the batch for pairing with its results."""
        c = self.cfg
        names = [f[0] for f in c["feeds"]]
        w = None
        try:
            b = first
            while b is not None:
                cols = []
                for temp, model_input, source, width in c["feeds"]:
                    col = b.column(b.schema.get_field_index(temp))
                    if width is not None and pa.types.is_list(col.type) and len(col) > 0:
                        _check_width(col, source, model_input, width)
                    cols.append(col)
                proj = pa.RecordBatch.from_arrays(cols, names=names)
                pending.put(b)
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

    def _read(self, child, pending, failure):
        """Pairs the child's result batches with the queued input rows."""
        c = self.cfg
        keep = c["keep"]
        out_types = [t for _, _, t in c["outputs"]]
        cur, off = None, 0
        try:
            reader = pa.ipc.open_stream(child.proc.stdout)
            for out in reader:
                outs = [_cast(out.column(i), t) for i, t in enumerate(out_types)]
                if c.get("argmax"):
                    col, src, width = c["argmax"]
                    j = [o[1] for o in c["outputs"]].index(src)
                    outs.append(_argmax(out.column(j).flatten(), width))
                o, n = 0, out.num_rows
                while o < n:
                    if cur is None or off == cur.num_rows:
                        cur, off = pending.get(), 0
                        if cur is _END:
                            raise ChildError("gotflow returned more rows than it was sent")
                    k = min(cur.num_rows - off, n - o)
                    part = cur.slice(off, k)
                    cols = [part.column(i) for i in keep] + [a.slice(o, k) for a in outs]
                    names = [part.schema.field(i).name for i in keep] + [o_[1] for o_ in c["outputs"]]
                    if c.get("argmax"):
                        names.append(c["argmax"][0])
                    yield pa.RecordBatch.from_arrays(cols, names=names)
                    off += k
                    o += k
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
        rest = 0 if cur is None or cur is _END else cur.num_rows - off
        while True:
            b = pending.get()
            if b is _END:
                break
            rest += b.num_rows
        if rest:
            raise child.error(f"gotflow returned {rest} fewer rows than it was sent")


def _cast(a, t):
    if a.type == t:
        return a
    return a.cast(t)


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
