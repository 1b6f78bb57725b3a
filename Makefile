# `make demo` (the CPU-sized comparison), `make test`, and `make test-libs` (timm, torchvision).
# Both create .venv and install what they need on first use.
.PHONY: setup setup-libs demo test test-libs clean

setup: .venv/.installed

.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

demo: setup
	.venv/bin/eae demo

test: setup
	.venv/bin/python -m pytest -q

# The timm and torchvision models against the real libraries, in .venv-libs (several GB).
setup-libs: .venv-libs/.installed

.venv-libs/.installed: pyproject.toml scripts/setup_libs.sh
	bash scripts/setup_libs.sh
	touch $@

test-libs: setup-libs
	EAE_REQUIRE_LIBS=1 .venv-libs/bin/python -m pytest -q tests/test_library_models.py

clean:
	rm -rf .venv .venv-libs runs .pytest_cache
