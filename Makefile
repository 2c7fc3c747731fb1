# The two commands a newcomer needs; both set everything up first (scripts/bootstrap.sh).
.PHONY: demo test setup bench clean

setup:
	@bash scripts/bootstrap.sh

demo: setup
	.venv/bin/dllab demo --out demo-out

# Three pytest workers, one test file each at a time (module fixtures stay in one process): most
# of a test's time is a kernel or a sandbox starting, so three share 2 cores well.
test: setup
	.venv/bin/python -m pytest -q -n 3 --dist loadfile --durations=25

clean:
	rm -rf demo-out .pytest_cache
