"""`trident conformance --compile-for sm_90`: every kernel the conformance cases ran in Triton's
interpreter, compiled for a GPU by Triton's compiler on the CPU (compiler/target_check.py). A
case whose kernel does not compile fails, with the compiler's first line."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from collections import defaultdict

from trident.compiler.target_check import TARGETS, Launch, compile_for_target


def compile_check(results: list, arch: str, jobs: int) -> str:
    """Compile the results' launches for `arch` in `jobs` processes; fail the cases whose kernels
    are refused. Returns the summary line."""
    users: dict[Launch, list] = defaultdict(list)
    for result in results:
        for d in result.launches:
            users[Launch.from_dict(d)].append(result)
    launches = sorted(users, key=lambda x: (x.path, repr(x.types), repr(x.constexprs)))
    chunks = [launches[k::jobs] for k in range(jobs)]
    with ThreadPoolExecutor(jobs) as pool:
        refused = [f for part in pool.map(lambda c: compile_for_target(c, TARGETS[arch]), chunks)
                   for f in part]
    by_kernel = {(f.path, f.function): f for f in refused}
    failed = set()
    for launch, cases in users.items():
        failure = by_kernel.get((launch.path, launch.function))
        for result in cases if failure else []:
            if result.status != "failed":
                first = failure.error.splitlines()[0][:200]
                result.status, result.failure = "failed", "compile"
                result.detail = f"a kernel does not compile for {arch}: {first}"
            failed.add(result.name)
    return (f"compiled for {arch}: {len(launches)} kernel launches; refused: {len(by_kernel)} "
            f"kernels, failing {len(failed)} cases")
