"""The executor side of GotflowEstimator.fit: one barrier task per worker.

Every task spools its partition to a local Arrow IPC file and counts its
rows; the tasks exchange the counts (allGather); rank 0 binds the sockets of
the parameter-server shards and of the coordinator on port 0, starts the
shards with their sockets (GOTFLOW_LISTEN_FD) and shares the addresses
(second allGather); then every task runs ``gotflow worker`` under a
TF_CONFIG naming its rank, on its own file (``--local-rows``), and the chief
exports the model. Rank 0 stops the shards once every worker is done.
"""

import json
import os
import re
import shutil
import socket
import tempfile

import pyarrow as pa

from ._binary import child_env, find_binary
from ._child import Child, ChildError

_KV = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def _parse_log(line):
    """key=value pairs of a slog text line; numbers become floats."""
    out = {}
    for k, v in _KV.findall(line):
        if v.startswith('"'):
            v = json.loads(v)
        else:
            try:
                v = float(v)
            except ValueError:
                pass
        out[k] = v
    return out


def _listen(host):
    """A listening TCP socket bound to port 0 on host; inheritable."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(128)
    s.set_inheritable(True)
    return s


class BarrierTrainer:
    """A picklable ``mapInArrow(..., barrier=True)`` function; cfg holds the
    job's settings (see GotflowEstimator._fit)."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, batches):
        from pyspark import BarrierTaskContext

        c = self.cfg
        ctx = BarrierTaskContext.get()
        rank = ctx.partitionId()
        workers = c["num_workers"]
        host = socket.gethostname()
        work = tempfile.mkdtemp(prefix=f"gotflow-train-{rank}-")
        children = []
        try:
            data = os.path.join(work, "part.arrow")
            rows = 0
            writer = None
            with pa.OSFile(data, "wb") as sink:
                for b in batches:
                    if b.num_rows == 0:
                        continue
                    if writer is None:
                        writer = pa.ipc.new_file(sink, b.schema)
                    writer.write_batch(b)
                    rows += b.num_rows
                if writer is not None:
                    writer.close()
            exe_error = ""
            try:
                exe = find_binary(c.get("binary"))
            except Exception as e:
                exe, exe_error = None, str(e)
            infos = [json.loads(m) for m in ctx.allGather(json.dumps({"rank": rank, "rows": rows, "host": host,
                                                                        "error": exe_error}))]
            infos.sort(key=lambda d: d["rank"])
            errors = [f"task {d['rank']}: {d['error']}" for d in infos if d["error"]]
            if errors:
                raise RuntimeError("GotflowEstimator: " + "; ".join(errors))
            empty = [d["rank"] for d in infos if d["rows"] == 0]
            if empty:
                raise RuntimeError(f"GotflowEstimator: partition(s) {empty} of {workers} hold no rows "
                                   f"(rows per partition: {[d['rows'] for d in infos]}); give the DataFrame more rows "
                                   "than numWorkers, or lower numWorkers")
            one_host = len({d["host"] for d in infos}) == 1
            bind = "127.0.0.1" if one_host else "0.0.0.0"
            advertise = "127.0.0.1" if one_host else host
            env = child_env(c.get("library_path"), {
                "GOTFLOW_SPARK_TASK": f"train stage {ctx.stageId()} rank {rank}",
                "GOTFLOW_PS_TOKEN": c["token"], "GOTFLOW_COORDINATOR_TOKEN": c["token"],
            })
            env.pop("TF_CONFIG", None)
            addrs = {}
            if rank == 0:
                socks = [_listen(bind) for _ in range(c["num_ps"] + 1)]
                coord, ps_socks = socks[0], socks[1:]
                addrs = {"chief": f"{advertise}:{coord.getsockname()[1]}",
                         "ps": [f"{advertise}:{s.getsockname()[1]}" for s in ps_socks]}
                for i, s in enumerate(ps_socks):
                    argv = [exe, "ps", "--listen", f"{bind}:0", "--shard", f"{i}/{len(ps_socks)}", "--mode", c["mode"],
                            "--workers", str(workers), "--optimizer", c["optimizer_json"], "--idle-timeout", "10m"]
                    if not one_host:
                        argv.append("--insecure")
                    penv = dict(env, GOTFLOW_LISTEN_FD=str(s.fileno()))
                    children.append(Child(argv, penv, f"gotflow ps shard {i} (host {host})", stdin=False,
                                          stdout=False, pass_fds=(s.fileno(),)))
                    s.close()
            shared = [json.loads(m) for m in ctx.allGather(json.dumps(addrs))]
            addrs = next(a for a in shared if a)
            counts = [d["rows"] for d in infos]
            cluster = {"chief": [addrs["chief"]], "ps": addrs["ps"],
                       "worker": [f"{d['host'] if not one_host else '127.0.0.1'}:1" for d in infos[1:]]}
            task = {"type": "chief", "index": 0} if rank == 0 else {"type": "worker", "index": rank - 1}
            wenv = dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": task}))
            argv = [exe, "worker", "--data", data, "--local-rows", ",".join(map(str, counts)), "--workers", str(workers),
                    *c["train_args"]]
            if not one_host:
                argv.append("--insecure")
            fds = ()
            if rank == 0:
                wenv["GOTFLOW_LISTEN_FD"] = str(coord.fileno())
                fds = (coord.fileno(),)
            worker = Child(argv, wenv, f"gotflow worker rank {rank} (host {host})", stdin=False, stdout=False,
                           pass_fds=fds)
            children.append(worker)
            if rank == 0:
                coord.close()
            try:
                code = worker.proc.wait(timeout=c["timeout"])
            except Exception:
                raise worker.error(f"training did not finish within {c['timeout']}s (param timeout)") from None
            if code != 0:
                raise worker.error("training failed")
            metrics = [_parse_log(l) for l in worker.lines() if "msg=epoch " in l]
            ctx.barrier()
            yield pa.RecordBatch.from_arrays(
                [pa.array([rank], pa.int32()), pa.array([rows], pa.int64()),
                 pa.array([json.dumps(metrics if rank == 0 else [])], pa.string())],
                names=["rank", "rows", "metrics"])
        finally:
            for ch in reversed(children):
                ch.stop()
            shutil.rmtree(work, ignore_errors=True)
