# `make run` and `make test` install what they need first (into the active Python).
PYTHON ?= python3
TORCH ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1

.PHONY: install run test compare
install: .install-stamp
.install-stamp: setup.py requirements-nodeps.txt
	$(PYTHON) -m pip install "$(TORCH)"
	$(PYTHON) -m pip install --no-deps -r requirements-nodeps.txt
	$(PYTHON) -m pip install -e ".[test]"
	touch .install-stamp

run: install
	$(PYTHON) run_recbole.py --model=CLLM4Rec

compare: install
	$(PYTHON) run_recbole.py --model=CLLM4Rec,MultiVAE,LightGCN,BPR,EASE --results_file=results/cllm4rec-ml-100k.md

test: install
	$(PYTHON) -m pytest -q tests
