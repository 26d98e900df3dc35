# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv once (torch is several GB), install the project with its
# dev extras, and are quick on the second run.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.autoprune-installed
EXAMPLE := docs/examples/autoprune-example-plugin
EXAMPLE_STAMP := $(VENV)/.example-plugin-installed

.PHONY: install lint test docs demo quickstart-doc bench bench-variants bench-finetune bench-driving bench-latency bench-runtimes bench-memory bench-timm gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The example third-party plugin is installed into the test environment, as a user
# would install a plugin, and its own tests (autoprune's conformance suite) run too.
$(EXAMPLE_STAMP): $(STAMP) $(EXAMPLE)/pyproject.toml
	$(BIN)/python -m pip install --quiet --no-deps -e $(EXAMPLE)
	@touch $(EXAMPLE_STAMP)

# ruff's lint and format check, configured in pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# PostgreSQL (loopback only) backs the test of several workers sharing one study.
test: lint $(EXAMPLE_STAMP)
	AUTOPRUNE_TEST_POSTGRES="$$(bash .ci/postgres.sh)" $(BIN)/python -m pytest

# The study-file reference table (docs/study_file.md), rendered from the settings' declarations;
# tests/test_docs.py fails while it is stale.
docs: install
	$(BIN)/python -m autoprune.reference docs/study_file.md

demo: install
	$(BIN)/autoprune search studies/quickstart.toml
	@echo "results: runs/quickstart/ (study.db: the Optuna study; best.pt: the pruned model; best_plan.json: its rates and methods; report/index.html: the Pareto front)"

# The quickstart's sample output in docs/quickstart.md: the demo run in a fresh folder, its
# summary written with the machine it ran on (about two minutes on two CPU cores).
quickstart-doc: install
	$(BIN)/python benchmarks/quickstart_doc.py --doc docs/quickstart.md

# The search benchmark (docs/benchmarks.md): two architectures on Fashion-MNIST, which Debian's
# dataset-fashion-mnist package provides (installed here when apt is there and we are
# root; otherwise the dataset plugin falls back to torchvision's download): the CIFAR
# ResNet-20, then a MobileNetV2-style network (inverted residuals, depthwise convolutions;
# benchmarks/bench_models.py). On two CPU cores, for the ResNet-20: about 20 minutes to train
# the baseline (cached), then 45 to 60 minutes per budget; a training step of the MobileNetV2-style
# network takes about 1.6 times the ResNet-20's CPU time. Each study then runs the fine-tuned protocol
# (study.budget = "finetuned") at 0.5 and 1.0 points (--finetuned-budgets). docs/benchmarks.md is rewritten after
# each budget, and each budget's numbers are kept per study in benchmarks/results/<study name>/:
# `make bench BENCH_ARGS=--resume` measures only the budgets not kept yet (the document names
# the commit each was measured at).
bench: install
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; fi
	$(BIN)/python benchmarks/bench_search.py studies/bench-fashion-mnist.toml studies/bench-fashion-mnist-mobilenet.toml \
		--doc docs/benchmarks.md $(BENCH_ARGS)

# The search variants (benchmarks/compare_search.py) at 1.0 point on both benchmark architectures: the default,
# one importance, local refinement, the allocation scope; 100 trials each, about 10 minutes per variant and
# architecture on two CPU cores, run alone. Kept per study in benchmarks/results/<study>/variants-1.0.json
# (`make bench-variants BENCH_ARGS=--resume` runs only the variants not kept yet); its section of
# docs/benchmarks.md is replaced in place.
bench-variants: install
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; fi
	$(BIN)/python benchmarks/compare_search.py studies/bench-fashion-mnist.toml studies/bench-fashion-mnist-mobilenet.toml \
		--doc docs/benchmarks.md $(BENCH_ARGS)

# One plan per benchmark architecture fine-tuned hard, soft and gradually (autoprune.plan.elastic) at the
# same epochs, into docs/benchmarks.md; each mode resumable with BENCH_ARGS=--resume.
bench-finetune: install
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; fi
	$(BIN)/python benchmarks/compare_finetune.py studies/bench-fashion-mnist.toml studies/bench-fashion-mnist-mobilenet.toml \
		--doc docs/benchmarks.md $(BENCH_ARGS)

# The driving-perception studies (detection and segmentation on synthetic road scenes), run
# as a user runs them, with their exports; their figures go into docs/benchmarks.md.
bench-driving: install
	$(BIN)/python benchmarks/bench_driving.py --doc docs/benchmarks.md

# How well a latency table predicts real timings (ResNet-18 and MobileNetV2 on the CPU, random
# plans); a few minutes, to be run alone. The error goes into docs/benchmarks.md.
bench-latency: install
	$(BIN)/python benchmarks/bench_latency.py --doc docs/benchmarks.md

# FLOPs reduction against measured speed-up in PyTorch, ONNX Runtime and OpenVINO on the CPU, one
# thread: the benchmark study's chosen plans and torchvision models, round_to 1 and "auto".
bench-runtimes: install
	$(BIN)/python benchmarks/bench_runtimes.py --doc docs/benchmarks.md

# Peak memory of searches on generated validation splits of 1x, 4x and 20x a 1 GiB limit, under
# that limit, and the per-trial time of streaming the Fashion-MNIST split against keeping it
# (its ResNet-20 untrained; Debian's dataset-fashion-mnist installed as for bench); about 10 minutes.
bench-memory: install
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; fi
	$(BIN)/python benchmarks/bench_memory.py --doc docs/benchmarks.md $(BENCH_ARGS)

# One timm model per family pruned at rate 0.3 and checked; the pass rate and every failure
# with its reason go into docs/pruning.md.
bench-timm: install
	$(BIN)/python benchmarks/prune_timm.py --doc docs/pruning.md

# On a machine with CUDA: the quickstart and a detection study on the GPU (float32 and AMP), a 2-worker
# search on 2 GPUs when there are two, every trial checked against a CPU re-scoring of its plan, and
# a latency table timed on the GPU; prints wall times, exits 1 on a failed check, and 0 with one line without CUDA.
gpu-check: install
	$(BIN)/python benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) runs build *.egg-info
