# Two commands a new user needs: `make demo` (the main job) and `make test` (the suite).
# Both create .venv with CPython 3.10 when it is missing and install the project into it.
VENV_PY := .venv/bin/python
EXTRAS := dev,quant,server,dist

.PHONY: demo test venv clean

venv:
	@bash .ci/bootstrap $(EXTRAS)

demo: venv
	$(VENV_PY) -m einfhe.tools.demo
	$(VENV_PY) examples/encrypted_digits.py

test: venv
	$(VENV_PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf .venv .pytest_cache .hypothesis
