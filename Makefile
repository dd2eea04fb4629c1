# Candor's two everyday commands, plus the helpers they share.
#   make serve   starts the gateway with the bundled models (fetches ONNX Runtime once)
#   make test    runs the whole test suite (the same command CI runs)

ORT_VERSION := 1.31.1
ORT_DIR     := .ort
ORT_LIB     := $(ORT_DIR)/libonnxruntime.so.$(ORT_VERSION)
PYTHON      ?= python3

# The official Triton client for the Open Inference Protocol test (tests/oip.rs).
OIP_VENV    := .venv-oip
OIP_REQS    := tests/oip_client/requirements.txt

export CANDOR_ORT_LIB := $(abspath $(ORT_LIB))
# Not CANDOR_*: those are the gateway's settings, and unknown ones are refused.
export OIP_PYTHON := $(abspath $(OIP_VENV))/bin/python

.PHONY: serve test ort bench

serve: $(ORT_LIB)
	cargo run --release --bin candor -- serve

# The test servers' data folders (tests/common) outlive their servers, for
# the restart tests; each run clears the last run's.
test: $(ORT_LIB) $(OIP_VENV)/installed
	rm -rf target/tmp/candor-test-*
	cargo test

bench: $(ORT_LIB)
	cargo bench --bench load

ort: $(ORT_LIB)

# ONNX Runtime comes from the official PyPI wheel: the only registry this project may reach.
$(ORT_LIB):
	@mkdir -p $(ORT_DIR)/wheel
	$(PYTHON) -m pip download --quiet --no-deps -d $(ORT_DIR)/wheel onnxruntime==$(ORT_VERSION)
	$(PYTHON) -c 'import glob, shutil, zipfile, sys; \
		whl = glob.glob("$(ORT_DIR)/wheel/onnxruntime-$(ORT_VERSION)-*.whl")[0]; \
		src = zipfile.ZipFile(whl).open("onnxruntime/capi/libonnxruntime.so.$(ORT_VERSION)"); \
		shutil.copyfileobj(src, open("$(ORT_LIB).part", "wb"))'
	mv $(ORT_LIB).part $(ORT_LIB)
	rm -rf $(ORT_DIR)/wheel

# Set up once, and again when the pinned requirements change.
$(OIP_VENV)/installed: $(OIP_REQS)
	rm -rf $(OIP_VENV)
	$(PYTHON) -m venv $(OIP_VENV)
	$(OIP_VENV)/bin/pip install --quiet -r $(OIP_REQS)
	touch $@
