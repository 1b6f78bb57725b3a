# Two commands: `make demo` (the CPU-sized comparison) and `make test`.
# Both create .venv and install what they need on first use.
.PHONY: setup demo test clean

setup: .venv/.installed

.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

demo: setup
	.venv/bin/eae demo

test: setup
	.venv/bin/python -m pytest -q

clean:
	rm -rf .venv runs .pytest_cache
