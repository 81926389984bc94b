# Two commands do everything on a fresh machine (Linux, Python 3.9+):
#   make bench   set up .venv, build, run benchmarks/run.py (the main job)
#   make test    set up .venv, build, run the test suite
# The build compiles the CUDA kernels when a CUDA toolkit and a CUDA build of torch are
# present and a GPU is visible, or always with FORCE_CUDA=1 (FORCE_CUDA=0: never).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1
# torchvision gives the benchmark its focal-loss yardstick and the examples their
# RetinaNet (torchmetrics + pycocotools: their COCO mAP); it must pair with torch.
TORCHVISION_SPEC ?= torchvision==0.29.1
# cuobjdump and the nvdisasm it runs, which the CUDA toolkit here lacks: the kernel
# report's float64 column (scripts/check_kernel_resources.py).
CUOBJDUMP_SPEC ?= nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37
# Ultralytics YOLO: the tests of aploss_cuda.integrations.ultralytics and its example.
ULTRALYTICS_SPEC ?= ultralytics==8.4.190
VPY := $(VENV)/bin/python
SOURCES := $(shell find csrc aploss_cuda -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.py' \)) setup.py pyproject.toml

.PHONY: setup test bench clean

setup: $(VENV)/.built

$(VENV)/.deps: Makefile
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install "$(TORCH_SPEC)" "$(TORCHVISION_SPEC)" "$(ULTRALYTICS_SPEC)" $(CUOBJDUMP_SPEC) ninja numpy pytest hypothesis expecttest matplotlib tqdm torchmetrics pycocotools
	touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	MAX_JOBS=$${MAX_JOBS:-2} $(VPY) -m pip install --no-build-isolation --no-deps .
	$(VPY) -I -c "import aploss_cuda; print(aploss_cuda.info())"  # -I: the installed package, not ./aploss_cuda
	touch $@

# The tests import the installed package (the pytest entry point does not put the
# source tree on sys.path).
test: setup
	$(VENV)/bin/pytest tests

bench: setup
	$(VPY) benchmarks/run.py $(ARGS)

clean:
	rm -rf build *.egg-info aploss_cuda/_C*.so $(VENV)
