# Conveniences over dev.sh (which needs only sh and Python 3.11).
.PHONY: run test bundle desktop self-test

run:
	./dev.sh run
test:
	./dev.sh test
bundle:
	./dev.sh bundle
desktop:
	./dev.sh desktop
self-test: bundle
	dist/ctviewer/ctviewer --self-test
