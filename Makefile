# The two set-up commands of the README, plus helpers.
.PHONY: demo test servers-up servers-down lock

demo:  ## run the local demo: Kafka + kube-apiserver, CRDs, a worker, traffic
	scripts/demo.sh

test:  ## install everything, start the real servers, lint, type-check and run every test
	scripts/test.sh

servers-up:
	scripts/infra/servers.sh up

servers-down:
	scripts/infra/servers.sh down

lock:  ## regenerate requirements.lock from pyproject.toml
	scripts/lock.sh
