# The two commands a new user needs (see README.md):
#   make search   installs what is missing, builds, and runs a short PC-DARTS search on
#                 Fashion-MNIST (Debian's dataset-fashion-mnist: real data, no download)
#   make test     installs what is missing and runs the test suite
# Other targets: setup, build, train, search-folder, example, bench, bench-torch, fixtures, format,
# lint, clean.

SWIFT ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
# Debian packages the build, the tests and the main job need.
PACKAGES := pkg-config libopenblas-dev liblapacke-dev zlib1g-dev libjpeg62-turbo-dev libpng-dev libopenmpi-dev openmpi-bin dataset-fashion-mnist graphviz python3
# What the tests need besides: headless Chromium renders a run's report.html to a PNG.
TEST_PACKAGES := chromium iproute2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Each `make search` (and `make train`) writes a new folder, as the official code's
# search-EXP-<time> (eval-EXP-<time>) does.
OUT ?= runs/fashion-mnist-$(shell date +%Y%m%d-%H%M%S)
TRAIN_OUT ?= runs/train-fashion-mnist-$(shell date +%Y%m%d-%H%M%S)
FOLDER_OUT ?= runs/folder-$(shell date +%Y%m%d-%H%M%S)
# What `make search-folder` searches: a folder of images, one sub-folder per class. The default is
# written once from Debian's Fashion-MNIST as PNG files by scripts/fashion_mnist_folder.py.
FOLDER_DATA ?= data/fashion-mnist-png
# What `make train` trains: a name from the official genotypes.py, a DARTS string, or a search
# run's folder (`make train GENOTYPE=runs/fashion-mnist-…`).
GENOTYPE ?= PC_DARTS_cifar

# The Swift files `make format` rewrites and `make lint` (CI) checks, with .swift-format's rules.
# The API guide's generated client (Examples/CustomPrimitive/Sources/APIGuide) keeps the guide's layout.
SWIFT_FILES := Sources Tests Package.swift Examples/CustomPrimitive/Sources/CustomPrimitive \
  Examples/CustomPrimitive/Package.swift

.PHONY: setup setup-test install-packages build test example search search-folder train bench bench-torch fixtures format lint clean

setup:
	@$(MAKE) --no-print-directory install-packages WANTED="$(PACKAGES)"

setup-test:
	@$(MAKE) --no-print-directory install-packages WANTED="$(PACKAGES) $(TEST_PACKAGES)"

install-packages:
	@missing=$$(for p in $(WANTED); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing missing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

build: setup
	$(SWIFT) build -c release

test: setup-test
	$(SWIFT) test --disable-swift-testing

# The client package in Examples/CustomPrimitive: links the three libraries, adds a conv_1x1
# candidate and runs three search steps on random data, then runs every snippet of
# docs/api-guide.md (APIGuide, which must match the guide: scripts/extract_api_guide.py
# regenerates it). Debug build, a few minutes from scratch.
example: setup
	python3 scripts/extract_api_guide.py --check
	cd Examples/CustomPrimitive && $(SWIFT) build --scratch-path .build \
	  && $(SWIFT) run --skip-build --scratch-path .build CustomPrimitive \
	  && $(SWIFT) run --skip-build --scratch-path .build APIGuide

# A short search on real data: a 5-layer, 8-channel super-net on 4,000 Fashion-MNIST images,
# 6 epochs with architecture updates from epoch 2; about ten minutes on 2 cores.
search: build
	$(SWIFT) run -c release search-cifar --dataset fashion-mnist --subset 4000 \
	  --layers 5 --init-channels 8 --batch-size 64 --epochs 6 --warmup-epochs 2 --out $(OUT)

# The same short search on a folder of PNG files (torchvision's ImageFolder layout: 4,000 training
# images, 400 per class), read through --dataset folder; about ten minutes on 2 cores.
search-folder: build $(FOLDER_DATA)
	$(SWIFT) run -c release search-cifar --dataset folder --data $(FOLDER_DATA) \
	  --layers 5 --init-channels 8 --batch-size 64 --epochs 6 --warmup-epochs 2 --out $(FOLDER_OUT)

data/fashion-mnist-png:
	python3 scripts/fashion_mnist_folder.py --out $@

# A genotype trained from scratch on real data: a 5-cell, 8-channel evaluation network (auxiliary
# head, cutout, drop-path) on 6,000 Fashion-MNIST training images for 10 epochs, tested on all
# 10,000 test images; a few minutes on 2 cores.
train: build
	$(SWIFT) run -c release train-cifar --dataset fashion-mnist --genotype "$(GENOTYPE)" --subset 6000 \
	  --layers 5 --init-channels 8 --batch-size 64 --epochs 10 --out $(TRAIN_OUT)

bench: build
	$(SWIFT) run -c release bench --K 1,2,4,8

# Side by side with the PyTorch reference (needs Debian's python3-torch).
bench-torch: build
	bash benchmarks/compare_with_torch.sh

# Needs Debian's python3-torch, python3-torchvision and python3-pil.
fixtures:
	/usr/bin/python3 scripts/make_fixtures.py
	/usr/bin/python3 scripts/make_image_fixtures.py

format:
	$(SWIFT) format --in-place --recursive --parallel $(SWIFT_FILES)

# Fails on any formatting difference or rule finding (`make format` fixes most).
lint:
	$(SWIFT) format lint --strict --recursive --parallel $(SWIFT_FILES)

clean:
	rm -rf .build Examples/CustomPrimitive/.build
