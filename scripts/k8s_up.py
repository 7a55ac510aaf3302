"""``make k8s-up``: a throwaway Kubernetes to try NexaJobs on, in one step.

Starts the control plane the tests use (etcd, kube-apiserver, controller-manager,
scheduler, all on loopback) with KWOK playing the kubelet for two fake nodes, one
of them with 8 ``nvidia.com/gpu``; installs Nexa's CRDs; runs the operator
against it; and prints the kubeconfig to use. Pods "run" on the fake nodes and
end as KWOK is told (no engine runs), so a NexaJob goes through its attempts,
retries and conditions the way it would on a real cluster. Ctrl-C stops it all.

    make k8s-up                   # then, in another shell:
    export KUBECONFIG=...         # the path it prints
    kubectl apply -f examples/nexajob-audit.yaml
    kubectl get nj -w

``--ready-file F`` writes the kubeconfig path to F once everything is up (for
scripts and the test of this script); ``--no-operator`` starts the cluster only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the test fixtures' control plane is the one to start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make k8s-up", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a fresh temp dir)")
    parser.add_argument("--no-operator", action="store_true", help="start the cluster only")
    parser.add_argument(
        "--ready-file", type=Path, default=None, help="write the kubeconfig path here when up"
    )
    args = parser.parse_args(argv)

    from tests.fixtures.k8s import K8sTestenvError, ensure_binaries, local_cluster

    work = args.dir or Path(tempfile.mkdtemp(prefix="nexa-k8s-"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        bin_dir = ensure_binaries(lambda message: print(message, flush=True))
        with ExitStack() as stack:
            print("starting etcd, kube-apiserver, controller-manager, scheduler and KWOK ...", flush=True)
            cluster = stack.enter_context(local_cluster(work, bin_dir))
            cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
            if not args.no_operator:
                env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
                log = (work / "logs" / "operator.log").open("ab")
                operator = subprocess.Popen(
                    [sys.executable, "-m", "nexa_operator"], env=env, stdout=log, stderr=subprocess.STDOUT
                )
                stack.callback(_stop, operator)
            kubectl = str(cluster.kubectl_path or shutil.which("kubectl") or "kubectl")
            print(
                f"\nready. In another shell:\n\n"
                f"  export KUBECONFIG={cluster.kubeconfig}\n"
                f"  {kubectl} get nodes\n"
                f"  {kubectl} apply -f {REPO / 'examples' / 'nexajob-audit.yaml'}\n"
                f"  {kubectl} get nj -w\n\n"
                f"Logs: {work / 'logs'}. Ctrl-C stops everything.",
                flush=True,
            )
            if args.ready_file is not None:
                args.ready_file.write_text(str(cluster.kubeconfig))
            stop.wait()
            print("stopping ...", flush=True)
    except K8sTestenvError as exc:
        print(f"k8s-up: {exc}", file=sys.stderr)
        return 1
    return 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


if __name__ == "__main__":
    raise SystemExit(main())
