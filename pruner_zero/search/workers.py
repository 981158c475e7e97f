"""Candidates measured on a pool of Ray actors (``search --workers N``, ``--ray-address``).

Each actor holds its own model and statistics (the statistics from the shared cache the driver
filled: computed once) on its GPUs (one, or with --device-map an equal share of the
cluster's, or --worker-gpus), or on CPU threads, and measures what it is handed: prune
with a formula, perplexity on the task's fitness windows under the generation's racing bound,
restore. Everything that decides (caches, fingerprints, the hall of fame) stays in the driver,
so a run is the same for any number of workers. An actor that dies has its measurement handed
to another one (started in its place), and the run goes on as if nothing happened.

Ray is an optional extra: nothing here imports it until a pool is started.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch

from pruner_zero.errors import CANDIDATE_ERRORS, ConfigError
from pruner_zero.measure import TaskBenches
from pruner_zero.search.config import SearchConfig, require_ray
from pruner_zero.search.evaluators import task_evaluators
from pruner_zero.search.reaper import Reaper
from pruner_zero.search.stored import config_dict, read_config

def gpus_per_worker(requested: float | None, device: str, device_map: str | None,
                    cluster_gpus: float, workers: int) -> float:
    """GPUs each actor asks Ray for: none on a CPU run (where a request is refused) or a
    cluster without GPUs; else the request (--worker-gpus); else, with --device-map (a model
    that needs several GPUs), an equal share of the cluster's; else one. Ray makes only an
    actor's own GPUs visible to it, so device_map="auto" spreads its model over those."""
    if str(device).startswith("cpu"):
        if requested is not None:
            raise ConfigError(f"--worker-gpus {requested:g} with --device {device}: a CPU run "
                              "uses no GPU; leave --worker-gpus out, or run on a GPU")
        return 0.0
    if requested is not None:
        return float(requested)
    if cluster_gpus < 1:
        return 0.0
    if device_map is not None:
        return float(max(1, int(cluster_gpus // max(workers, 1))))
    return 1.0


class EvaluationWorker:
    """What one actor holds and does (a plain class; ``WorkerPool`` makes it a Ray actor)."""

    def __init__(self, stored: dict[str, Any], needed: list[str], threads: int | None) -> None:
        if threads:
            torch.set_num_threads(threads)
        config = read_config(stored, check=False)  # as the driver checked it
        cache = None if config.cache_dir is None else Path(config.cache_dir)
        benches = TaskBenches(config.runtime(), cache, progress=False,
                              log=lambda msg: None, needed=set(needed))
        self.evaluators = task_evaluators(benches, list(config.task_list), config)

    def measure(self, task: int, formula: str, bound: float | None) -> tuple:
        return self.evaluators[task].measure_formula(formula, bound)

    def pid(self) -> int:
        return os.getpid()


class WorkerPool:
    """``workers`` actors measuring (task, formula, bound) jobs; results in the jobs' order."""

    def __init__(self, config: SearchConfig, needed: set[str], workers: int,
                 address: str | None = None, cpus_per_worker: int | None = None,
                 requested_gpus: float | None = None, progress: bool = False,
                 log: Callable[[str], None] = print) -> None:
        require_ray(workers or 1, address)
        import ray

        if workers < 1:
            raise ConfigError(f"--workers must be at least 1 with a pool, got {workers}")
        self.stored, self.needed, self.log = config_dict(config), sorted(needed), log
        self.progress = progress
        self.started_ray = not ray.is_initialized()
        self.reaper = None
        if self.started_ray:
            if address is None:  # a local cluster of this machine's cores, none of it left behind
                self.reaper = Reaper.start()
                cpus = os.cpu_count() or 1
                per = cpus_per_worker or max(1, cpus // workers)
                try:
                    ray.init(num_cpus=max(cpus, per * workers), include_dashboard=False,
                             log_to_driver=False, configure_logging=False)
                except BaseException:
                    self._close_reaper()
                    raise
                self._watch()
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        resources = ray.cluster_resources()
        runtime = config.runtime()
        try:  # a pool that cannot start leaves no Ray behind
            gpus = gpus_per_worker(requested_gpus, runtime.device, runtime.device_map,
                                   resources.get("GPU", 0), workers)
            if gpus and gpus * workers > resources.get("GPU", 0):
                raise ConfigError(f"--workers {workers} need {gpus * workers:g} GPUs and the Ray "
                                  f"cluster has {resources.get('GPU', 0):g}; use at most "
                                  f"{int(resources.get('GPU', 0) // gpus)} workers")
        except ConfigError:
            self.close()
            raise
        per = cpus_per_worker or max(1, int(resources.get("CPU", 1)) // workers)
        self._actor = ray.remote(num_cpus=per, num_gpus=gpus, max_restarts=0)(EvaluationWorker)
        self._threads = per if not gpus else None
        self.actors = [self._start() for _ in range(workers)]
        self._watch()  # the agents started with the cluster; the actors die with it
        self._idle = list(self.actors)
        self._queue: list[int] = []  # tickets waiting for an actor
        self._running: dict[Any, tuple[int, Any]] = {}  # ref -> (ticket, actor)
        self._jobs: dict[int, tuple[int, str, float | None]] = {}
        self._results: dict[int, Any] = {}
        self._tickets = 0
        self._discarded: set[int] = set()  # running jobs whose results nobody will use
        self.replaced = 0
        self.max_replaced = 2 * workers + 2  # then the workers cannot run at all: say so
        self.after_result: list[Callable[["WorkerPool"], None]] = []  # test hooks
        log(f"workers: {workers} Ray actors ({per} CPU{'s' if per > 1 else ''}"
            f"{f', {gpus:g} GPU' if gpus else ''} each)")

    def _start(self):
        return self._actor.remote(self.stored, self.needed, self._threads)

    def measure(self, jobs: list[tuple[int, str, float | None]]) -> list[Any]:
        """Every job measured once by some live actor, the results in the jobs' order."""
        return self.gather([self.submit(job) for job in jobs])

    def submit(self, job: tuple[int, str, float | None]) -> int:
        """Queue a job (started at once on an idle actor); its ticket for ``gather``."""
        self._tickets += 1
        ticket = self._tickets
        self._jobs[ticket] = job
        self._queue.append(ticket)
        self._pump(block=False)
        return ticket

    def gather(self, tickets: list[int]) -> list[Any]:
        """The results of these tickets, waiting for them. An actor that dies is replaced and
        its job handed to another; a job that fails inside a live actor comes back as the error
        (a candidate's), or is raised (a bug)."""
        from tqdm.auto import tqdm

        unknown = [t for t in tickets if t in self._discarded
                   or (t not in self._jobs and t not in self._results)]
        if unknown or len(set(tickets)) < len(tickets):
            raise ValueError(f"tickets gathered twice or never submitted: "
                             f"{unknown or sorted(tickets)}")
        with tqdm(total=len(tickets), desc="measuring", unit="metric", leave=False,
                  disable=not self.progress) as bar:
            while True:
                bar.n = sum(t in self._results for t in tickets)
                bar.refresh()
                if bar.n == len(tickets):
                    break
                if not self._running and not self._queue:
                    raise RuntimeError("measurements lost by the pool: nothing runs or waits")
                self._pump(block=True)
        return [self._results.pop(t) for t in tickets]

    def _pump(self, block: bool) -> None:
        """Start queued jobs on idle actors, then take in the finished ones (at least one when
        ``block``), and start more."""
        import ray
        from ray.exceptions import RayActorError

        self._dispatch()
        if not self._running:
            if self._queue:  # no actor left to run them: say so rather than wait forever
                raise RuntimeError(f"{len(self._queue)} measurements queued and no worker to "
                                   "run them")
            return
        ready, _ = ray.wait(list(self._running), num_returns=1 if block else len(self._running),
                            timeout=None if block else 0)
        for ref in ready:
            ticket, actor = self._running.pop(ref)
            try:
                self._results[ticket] = ray.get(ref)
            except RayActorError as exc:  # the actor is gone: its job goes to another
                if self.replaced >= self.max_replaced:
                    self._forget(ticket)
                    self.actors.remove(actor)
                    raise RuntimeError(f"{self.replaced} workers died (the last: {exc}); "
                                       "the workers cannot load or run the model") from None
                self.log(f"warning: a worker died ({type(exc).__name__}); its candidate is "
                         "measured again on another worker")
                self.actors.remove(actor)
                fresh = self._start()
                self.actors.append(fresh)
                self.replaced += 1
                self._idle.append(fresh)
                if ticket in self._discarded:
                    self._forget(ticket)
                else:
                    self._queue.insert(0, ticket)
                continue
            except ray.exceptions.RayTaskError as exc:  # raised by the measurement
                cause = exc.as_instanceof_cause()
                if not isinstance(cause, CANDIDATE_ERRORS) and ticket not in self._discarded:
                    self._forget(ticket)  # a bug: end the run with it (the pool stays usable)
                    self._idle.append(actor)
                    raise cause from None
                self._results[ticket] = cause
            self._idle.append(actor)
            if ticket in self._discarded:  # nobody waits for it
                result = self._results[ticket]
                if isinstance(result, BaseException) and not isinstance(result, CANDIDATE_ERRORS):
                    self.log(f"warning: a prefetched measurement that was not needed failed: "
                             f"{self._results[ticket]!r}")
                self._forget(ticket)
            else:
                del self._jobs[ticket]
            for hook in self.after_result:
                hook(self)
        self._dispatch()

    def discard(self, tickets: list[int]) -> None:
        """Jobs whose results nobody will use: dropped from the queue, or when they arrive."""
        for t in tickets:
            if t in self._results:
                self._forget(t)
            elif t in self._queue:
                self._queue.remove(t)
                self._forget(t)
            elif t in self._jobs:
                self._discarded.add(t)

    def _forget(self, ticket: int) -> None:
        self._jobs.pop(ticket, None)
        self._results.pop(ticket, None)
        self._discarded.discard(ticket)

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            ticket, actor = self._queue.pop(0), self._idle.pop(0)
            self._running[actor.measure.remote(*self._jobs[ticket])] = (ticket, actor)

    def pids(self) -> list[int]:
        import ray

        return ray.get([a.pid.remote() for a in self.actors])

    def _watch(self) -> None:
        """Hand the watcher the Ray processes started so far; without it, say what it costs."""
        if self.reaper is None:
            return
        try:
            self.reaper.watch_children()
        except OSError as exc:
            self.log(f"warning: the watcher of Ray's processes stopped ({exc}); if this search "
                     "is killed, Ray's agents may outlive it by about a minute")
            self._close_reaper()

    def _close_reaper(self) -> None:
        if getattr(self, "reaper", None) is not None:
            self.reaper.close()
            self.reaper = None

    def close(self) -> None:
        import ray

        try:
            for a in getattr(self, "actors", []):
                ray.kill(a)
        finally:
            self.actors = []
            try:
                if self.started_ray:
                    ray.shutdown()
            finally:
                self._close_reaper()
