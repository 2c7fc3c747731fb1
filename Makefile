# The two commands a newcomer needs; both set everything up first (scripts/bootstrap.sh).
.PHONY: demo test setup bench clean

setup:
	@bash scripts/bootstrap.sh

demo: setup
	.venv/bin/dllab demo --out demo-out

test: setup
	.venv/bin/python -m pytest -q --durations=25

clean:
	rm -rf demo-out .pytest_cache
