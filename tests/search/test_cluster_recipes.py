"""The cluster recipes under ``configs/cluster/`` agree with the Dockerfile, the CLI and the config they run.

Two recipes run the same job, ``sharpbench run CONFIG --address auto --results /shared/results``:
``aws-gpu.yaml`` for Ray's cluster launcher (``ray up``), and ``rayjob.yaml`` (with
``shared-storage.yaml``) for KubeRay. Nothing here starts a cluster: each recipe is read back into
one typed view (image, entrypoint, node groups with their CPUs, GPUs and mounts), and that view is
checked against what it depends on: Ray's own validation of launcher configs, the image the
Dockerfile builds, the real CLI parser, the benchmark config's resources, and the folders that
bench.data and Tune read and write.
"""

from __future__ import annotations

import ast
import itertools
import re
import shlex
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath

import pytest
import yaml
from packaging.requirements import Requirement

from bench.config import BenchmarkConfig, DataConfig, load_config
from bench.data.vision import DEFAULT_DATA_DIR

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "configs" / "cluster"
LAUNCHER = CLUSTER / "aws-gpu.yaml"
RAYJOB = CLUSTER / "rayjob.yaml"
STORAGE = CLUSTER / "shared-storage.yaml"
#: What the Dockerfile's image is called in every recipe and in the README's build command.
IMAGE = "REGISTRY/sharpbench:TAG"


# ---------------------------------------------------------------------------------------------
# The Dockerfile, read as instructions


@dataclass(frozen=True)
class Instruction:
    keyword: str  # FROM, RUN, COPY, ...
    arguments: str


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def run_commands() -> list[list[str]]:
    """Every shell command of the Dockerfile's RUN lines (split on ``&&``), as argv lists."""
    return [
        shlex.split(command)
        for instruction in dockerfile()
        if instruction.keyword == "RUN"
        for command in instruction.arguments.split("&&")
    ]


def workdir() -> PurePosixPath:
    """The image's working folder (the last WORKDIR): the repository is copied there."""
    return PurePosixPath([i.arguments for i in dockerfile() if i.keyword == "WORKDIR"][-1])


def image_home() -> PurePosixPath:
    """Home folder of the user the image runs as: root's, unless the Dockerfile names a USER."""
    users = [i.arguments for i in dockerfile() if i.keyword == "USER"]
    assert not users, "the Dockerfile sets USER: update image_home() and the recipes' data mounts"
    return PurePosixPath("/root")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pinned(package: str) -> str:
    """The version constraints.txt pins ``package`` to."""
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"constraints.txt does not pin {package}")


def image_requirements() -> list[Requirement]:
    """What the image's ``pip install ... -e .[extras]`` installs: the project's dependencies plus
    the optional groups it names."""
    project = pyproject()["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    for argv in run_commands():
        if argv[:2] == ["pip", "install"] and "-e" in argv:
            target = Requirement("sharpbench" + argv[argv.index("-e") + 1].removeprefix("."))
            for extra in target.extras:
                requirements += [Requirement(text) for text in project["optional-dependencies"][extra]]
    return requirements


# ---------------------------------------------------------------------------------------------
# The recipes, read into one view


@dataclass(frozen=True)
class Mount:
    target: PurePosixPath  # path inside the container
    source: str  # host path (launcher) or "volume/subPath" (Kubernetes)


@dataclass(frozen=True)
class NodeGroup:
    name: str
    cpus: Fraction  # Ray's CPU resource per node
    gpus: Fraction  # Ray's GPU resource per node
    fixed_size: bool  # min = max workers (or replicas): the pool does not scale
    mounts: tuple[Mount, ...]
    images: tuple[str, ...]

    def mount_of(self, path: PurePosixPath) -> Mount | None:
        """The mount that holds ``path`` (the deepest one), if any."""
        holding = [m for m in self.mounts if path == m.target or m.target in path.parents]
        return max(holding, key=lambda m: len(m.target.parts), default=None)


@dataclass(frozen=True)
class Recipe:
    name: str
    entrypoint: str
    head: NodeGroup
    workers: tuple[NodeGroup, ...]

    @property
    def groups(self) -> tuple[NodeGroup, ...]:
        return (self.head, *self.workers)


def load_yaml(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def _docker_mounts(options: list[str]) -> tuple[Mount, ...]:
    argv = shlex.split(" ".join(options))
    mounts = []
    for flag, value in itertools.pairwise(argv):
        if flag in ("-v", "--volume"):
            source, target = value.split(":")[:2]
            mounts.append(Mount(PurePosixPath(target), source))
    return tuple(mounts)


def launcher_recipe() -> Recipe:
    (config,) = load_yaml(LAUNCHER)
    docker = config["docker"]

    def group(name: str, spec: dict, role: str) -> NodeGroup:
        options = docker.get("run_options", []) + docker.get(f"{role}_run_options", [])
        image = docker.get(f"{role}_image", docker["image"])
        resources = spec["resources"]
        return NodeGroup(
            name,
            Fraction(resources.get("CPU", 0)),
            Fraction(resources.get("GPU", 0)),
            spec.get("min_workers") == spec.get("max_workers"),
            _docker_mounts(options),
            (image,),
        )

    types = config["available_node_types"]
    head = config["head_node_type"]
    return Recipe(
        "aws-gpu.yaml",
        config["metadata"]["sharpbench_job"],
        group(head, types[head], "head"),
        tuple(group(name, spec, "worker") for name, spec in types.items() if name != head),
    )


def kubernetes_quantity(text: str | int) -> Fraction:
    """A Kubernetes CPU/GPU quantity ("32", "500m") as a number of units."""
    text = str(text)
    return Fraction(text[:-1]) / 1000 if text.endswith("m") else Fraction(text)


def _pod_group(name: str, spec: dict, fixed_size: bool) -> NodeGroup:
    pod = spec["template"]["spec"]
    ray_container = pod["containers"][0]  # KubeRay's default Ray container: the first one
    limits = ray_container["resources"]["limits"]
    start = spec.get("rayStartParams", {})
    # KubeRay passes the container's limits to `ray start` unless rayStartParams set them.
    cpus = kubernetes_quantity(start.get("num-cpus", limits.get("cpu", 0)))
    gpus = kubernetes_quantity(start.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", [])}
    mounts = tuple(
        Mount(PurePosixPath(m["mountPath"]), "/".join(filter(None, (claims[m["name"]], m.get("subPath")))))
        for m in ray_container.get("volumeMounts", [])
    )
    return NodeGroup(name, cpus, gpus, fixed_size, mounts, tuple(c["image"] for c in pod["containers"]))


def rayjob_recipe() -> Recipe:
    (job,) = load_yaml(RAYJOB)
    cluster = job["spec"]["rayClusterSpec"]
    workers = tuple(
        _pod_group(w["groupName"], w, w.get("minReplicas") == w.get("maxReplicas") == w.get("replicas"))
        for w in cluster["workerGroupSpecs"]
    )
    return Recipe("rayjob.yaml", job["spec"]["entrypoint"], _pod_group("head", cluster["headGroupSpec"], True), workers)


RECIPES = [launcher_recipe, rayjob_recipe]


@pytest.fixture(params=RECIPES, ids=["launcher", "rayjob"])
def recipe(request) -> Recipe:
    return request.param()


def entrypoint_config(recipe: Recipe) -> BenchmarkConfig:
    """The benchmark config the entrypoint names, read from the repository (the image's WORKDIR
    holds a copy of it: `COPY . .`)."""
    argv = shlex.split(recipe.entrypoint)
    path = PurePosixPath(argv[2])
    return load_config(REPO / path.relative_to(workdir()))


# ---------------------------------------------------------------------------------------------
# Ray's and KubeRay's own formats


def test_launcher_config_passes_rays_own_validation():
    """What `ray up` does before it touches a cloud: fill in the provider's defaults, then validate
    against ray/autoscaler/ray-schema.json. The schema forbids unknown keys, shown by a typo."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    (config,) = load_yaml(LAUNCHER)
    validate_config(prepare_config(config))

    misspelled = dict(config, docker=dict(config["docker"], imgae=IMAGE))
    with pytest.raises(jsonschema.ValidationError, match="imgae"):
        validate_config(prepare_config(misspelled))


def test_rayjob_manifest_is_a_kuberay_v1_rayjob_for_the_images_ray():
    (job,) = load_yaml(RAYJOB)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    # The cluster goes away with the job; its results stay on the shared volume.
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    # Ray refuses nodes of another version, and KubeRay picks its behaviour from rayVersion.
    assert cluster["rayVersion"] == pinned("ray")
    assert cluster["authOptions"] == {"mode": "token"}
    assert [c["name"] for c in cluster["headGroupSpec"]["template"]["spec"]["containers"]] == ["ray-head"]


def test_launcher_runs_ray_with_token_authentication_on_every_node():
    """Same RAY_AUTH_MODE=token and the same token file on every node (FIELD-NOTES: Ray)."""
    (config,) = load_yaml(LAUNCHER)
    argv = shlex.split(" ".join(config["docker"]["run_options"]))
    env = dict(argv[i + 1].split("=", 1) for i, flag in enumerate(argv) if flag in ("-e", "--env"))
    assert env["RAY_AUTH_MODE"] == "token"
    token = PurePosixPath(env["RAY_AUTH_TOKEN_PATH"])
    # file_mounts copies the local token folder to every node before its container starts.
    assert str(token.parent) in config["file_mounts"]


# ---------------------------------------------------------------------------------------------
# One image: the Dockerfile's, with the CLI the entrypoint calls


def test_every_recipe_and_the_readme_name_the_same_image():
    (launcher,) = load_yaml(LAUNCHER)
    docker = launcher["docker"]
    images = {docker["image"], docker.get("head_image", IMAGE), docker.get("worker_image", IMAGE)}
    for factory in RECIPES:
        images |= {image for group in factory().groups for image in group.images}
    images |= {
        container["image"]
        for doc in load_yaml(STORAGE)
        if doc["kind"] == "Job"
        for container in doc["spec"]["template"]["spec"]["containers"]
    }
    assert images == {IMAGE}
    assert f"docker build -t {IMAGE} ." in (REPO / "README.md").read_text()


def test_the_image_installs_the_cli_that_the_entrypoints_call(recipe):
    program = shlex.split(recipe.entrypoint)[0]
    # pip installs the project's console scripts; `sharpbench` is bench.cli:main.
    assert pyproject()["project"]["scripts"][program] == "bench.cli:main"
    commands = run_commands()
    installs = [argv for argv in commands if argv[:2] == ["pip", "install"] and "-e" in argv]
    assert installs, "the Dockerfile installs the project (pip install -e .)"
    # The dependencies come pinned by the same constraints file as the README's install.
    assert any(argv[argv.index("-c") + 1] == "constraints.txt" for argv in installs if "-c" in argv)
    # The build runs the CLI, so a built image has a working `sharpbench`.
    assert any(argv[:1] == [program] for argv in commands)
    keywords = [(i.keyword, i.arguments) for i in dockerfile()]
    assert ("COPY", ". .") in keywords  # the repository (configs included) lands in WORKDIR
    assert workdir() == PurePosixPath("/app")


def test_launcher_setup_pins_with_the_images_constraints_file():
    """The head's extra pip install (boto3 for the autoscaler) may not move a package the image pinned."""
    (config,) = load_yaml(LAUNCHER)
    copied = [i.arguments.split()[:-1] for i in dockerfile() if i.keyword == "COPY" and i.arguments.endswith("./")]
    assert any("constraints.txt" in sources for sources in copied)
    for command in config["setup_commands"] + config["head_setup_commands"] + config["worker_setup_commands"]:
        argv = shlex.split(command.split("#")[0])
        if argv[:2] == ["pip", "install"]:
            assert PurePosixPath(argv[argv.index("-c") + 1]) == workdir() / "constraints.txt"


def test_the_image_serves_rays_job_api_for_kuberay():
    """A RayJob is submitted through the head's dashboard (port 8265), which only `ray[default]`
    installs; KubeRay's probes query it too."""
    ray_extras = set().union(*(r.extras for r in image_requirements() if r.name == "ray"))
    assert "default" in ray_extras


# ---------------------------------------------------------------------------------------------
# The entrypoint: the real CLI's parser, the config it names, the resources it needs


def test_both_recipes_run_the_same_job():
    assert launcher_recipe().entrypoint == rayjob_recipe().entrypoint
    # The README gives the launcher's job verbatim (`ray exec ... --tmux "<job>"`).
    assert launcher_recipe().entrypoint in (REPO / "README.md").read_text()


def test_entrypoint_parses_with_the_real_cli(recipe):
    import typer.exceptions
    import typer.main

    from bench.cli import app

    argv = shlex.split(recipe.entrypoint)
    group = typer.main.get_command(app)
    parent = group.make_context(argv[0], argv[1:])
    command = group.get_command(parent, argv[1])
    assert command is not None, f"no subcommand {argv[1]!r}"
    # make_context parses and validates every option (types, choices) without running the command.
    params = command.make_context(argv[1], argv[2:], parent=parent).params
    assert params["address"] == "auto"  # join the cluster the job runs in
    assert Path(params["results"]) == Path("/shared/results")
    assert entrypoint_config(recipe).benchmark == "cifar10_resnet18"

    # The parser is strict: a misspelled option fails here, not on the cluster.
    with pytest.raises(typer.exceptions.TyperException, match="--adress"):
        command.make_context(argv[1], [*argv[2:], "--adress", "auto"], parent=parent)


def test_gpu_workers_can_place_the_configs_trials(recipe):
    """Each GPU worker holds at least one trial of the config, and its CPUs never strand a share of
    its GPUs; the head runs the driver only. Fractions, not floats: 4 / 0.5 must be exactly 8, as
    in Ray's fixed-point resource accounting."""
    resources = entrypoint_config(recipe).resources
    gpus_per_trial = Fraction(str(resources.gpus_per_trial))
    cpus_per_trial = Fraction(str(resources.cpus_per_trial))
    assert gpus_per_trial > 0, "the recipes are sized for a GPU config"
    assert recipe.head.gpus == 0
    assert recipe.workers
    for worker in recipe.workers:
        by_gpu = worker.gpus // gpus_per_trial
        by_cpu = worker.cpus // cpus_per_trial
        assert by_gpu >= 1, f"{worker.name}: {worker.gpus} GPUs cannot hold a trial of {gpus_per_trial}"
        assert by_cpu >= by_gpu, f"{worker.name}: {worker.cpus} CPUs leave GPU shares idle"
        # `sharpbench run` sizes each search's concurrency from the cluster's resources when the
        # run starts (bench.search.runtime.trial_slots): a pool that scaled up later would stay unused.
        assert worker.fixed_size, f"{worker.name} autoscales"


def test_results_are_on_one_volume_that_every_node_mounts(recipe):
    """The driver writes Parquet and MLflow there, and every trial writes its checkpoints to
    RESULTS/ray (Tune's storage_path) from the node it runs on: the same volume, same path, all nodes."""
    argv = shlex.split(recipe.entrypoint)
    results = PurePosixPath(argv[argv.index("--results") + 1])
    mounts = {group.name: group.mount_of(results / "ray") for group in recipe.groups}
    assert None not in mounts.values(), f"nodes without the results volume: {mounts}"
    assert len({(m.target, m.source) for m in mounts.values()}) == 1


def test_datasets_are_mounted_where_bench_data_looks(recipe):
    """The config leaves dataset.data_dir unset, so every node reads ~/.cache/sharpbench/data of the
    image's user; each node mounts the shared dataset folder there."""
    config = entrypoint_config(recipe)
    assert config.dataset.data_dir is None
    default = image_home() / PurePosixPath(DEFAULT_DATA_DIR).relative_to("~")
    sources = set()
    for group in recipe.groups:
        mount = group.mount_of(default)
        assert mount is not None and mount.target == default, f"{group.name} has no dataset mount at {default}"
        sources.add(mount.source)
    assert len(sources) == 1


def test_launcher_mounts_the_shared_volume_on_the_host_before_docker():
    """Docker's -v binds a host folder: the launcher's initialization commands (run on the host)
    must mount the shared file system at the folder the containers bind."""
    (config,) = load_yaml(LAUNCHER)
    hosts = {m.source for group in launcher_recipe().groups for m in group.mounts}
    mounted = [
        argv[-1]
        for argv in (shlex.split(c) for c in config["initialization_commands"])
        if "mount" in argv and "-t" in argv and argv[argv.index("-t") + 1].startswith("nfs")
    ]
    assert len(mounted) == 1
    shared = PurePosixPath(mounted[0])
    assert all(PurePosixPath(host) == shared or shared in PurePosixPath(host).parents for host in hosts), hosts


def test_shared_storage_is_one_read_write_many_claim_filled_with_the_configs_dataset():
    claim, fetch = load_yaml(STORAGE)
    assert claim["kind"] == "PersistentVolumeClaim"
    assert "ReadWriteMany" in claim["spec"]["accessModes"]  # mounted by every Ray pod at once
    claimed = {m.source.split("/")[0] for group in rayjob_recipe().groups for m in group.mounts}
    assert claimed == {claim["metadata"]["name"]}

    # The fetch Job mounts the claim's data folder where the Ray pods read it.
    pod = fetch["spec"]["template"]["spec"]
    fetch_group = _pod_group("fetch", {"template": fetch["spec"]["template"]}, True)
    default = image_home() / PurePosixPath(DEFAULT_DATA_DIR).relative_to("~")
    assert fetch_group.mount_of(default) == rayjob_recipe().head.mount_of(default)

    # Its program is real Python that builds a valid DataConfig for the config's dataset.
    argv = pod["containers"][0]["command"]
    assert argv[:2] == ["python", "-c"]
    tree = ast.parse(argv[2])
    (call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "DataConfig"]
    data = DataConfig(**{k.arg: ast.literal_eval(k.value) for k in call.keywords})
    expected = entrypoint_config(rayjob_recipe()).dataset
    assert (data.name, data.data_dir, data.download) == (expected.name, expected.data_dir, True)


def test_readme_names_every_recipe_and_only_existing_ones():
    text = (REPO / "README.md").read_text()
    named = set(re.findall(r"configs/cluster/[\w.-]+\.yaml", text))
    assert named == {str(p.relative_to(REPO)) for p in CLUSTER.glob("*.yaml")}
