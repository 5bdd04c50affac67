# Two commands set up a fresh machine: `make test` and `make demo`.
# Both create .venv, install requirements.txt, build the kernel packages and install videomamba.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
PYTEST_ARGS ?=
# The Slurm tests may install Debian's Slurm and munge with apt-get (as root or with passwordless sudo)
# where they are missing: CI needs them on a clean machine. Opt out with VIDEOMAMBA_TEST_INSTALL_SLURM=0.
export VIDEOMAMBA_TEST_INSTALL_SLURM ?= 1

# Build the CUDA kernels only where a GPU is visible (override: make test CUDA_BUILD=TRUE).
# The test suite still compiles every .cu file with nvcc when nvcc is installed.
CUDA_BUILD ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo TRUE || echo FALSE)
ifeq ($(CUDA_BUILD),TRUE)
  BUILD_ENV :=
else
  BUILD_ENV := CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE
endif

KERNEL_SOURCES := $(shell find causal-conv1d mamba \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' \
                    -o -name setup.py -o -name pyproject.toml -o -name build.py \) -not -path '*/build/*')

.PHONY: install test lint demo clean

install: $(VENV)/.kernels

$(VENV)/.requirements: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -r requirements.txt
	# torchvision only imports beside the PyPI torch build: fail here, not in the tests.
	$(PY) -c "import torch, torchvision; print('torch', torch.__version__, '| torchvision', torchvision.__version__)"
	touch $@

$(VENV)/.kernels: $(VENV)/.requirements $(KERNEL_SOURCES) pyproject.toml
	$(BUILD_ENV) $(PIP) install --no-build-isolation -e causal-conv1d
	$(BUILD_ENV) $(PIP) install --no-build-isolation -e mamba
	$(PIP) install --no-build-isolation --no-deps -e .
	$(PY) -c "import causal_conv1d, mamba_ssm; print(causal_conv1d.dispatcher.describe()); print(mamba_ssm.dispatcher.describe())"
	touch $@

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

# The video main job: synthetic motion-order videos, CPU training, multi-view test, summary JSON (last line).
demo: install
	$(PY) -m videomamba.video_sm.demo --output_dir demo_output/video_sm

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) causal-conv1d/build mamba/build build *.egg-info */*.egg-info
	find causal-conv1d mamba -name '*.so' -delete
