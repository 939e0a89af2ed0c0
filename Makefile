# weir — build, test, demo.  `make` builds build/weir and build/weirctl.
#
# Layout of outputs:
#   build/            release build (-O2)
#   build/asan/       the same sources under AddressSanitizer + UndefinedBehaviorSanitizer
# router/ is compiled with include/ only on its include path, so a stray
# #include <uv.h> or <llhttp.h> in the decision plane fails the build.

PREFIX   ?= /usr/local
CC       ?= cc
LLHTTP_SRC := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp
DEPS_PKGS  := libuv1-dev libssl-dev openssl libxxhash-dev libcmocka-dev node-llhttp curl clang-format clang-14 libclang-rt-14-dev

VERSION  := 0.1.0
B        ?= build
SAN      ?=
OPT      ?= -O2
EXTRA_CFLAGS ?=
CFLAGS_COMMON = -std=c11 $(OPT) -g -Wall -Wextra -Werror -D_GNU_SOURCE -DWEIR_VERSION='"$(VERSION)"' \
                -Iinclude $(SAN) $(EXTRA_CFLAGS)
ROUTER_CFLAGS = $(CFLAGS_COMMON)
PROXY_CFLAGS  = $(CFLAGS_COMMON) -I$(LLHTTP_INC)
LDFLAGS_SAN   = $(SAN)
LIBS          = -luv -lssl -lcrypto -lxxhash -lpthread

ROUTER_SRCS := $(wildcard router/*.c)
ROUTER_OBJS := $(ROUTER_SRCS:%.c=$(B)/%.o)
ROUTER_LIB  := $(B)/librouter.a

# Proxy sources that need neither libuv nor llhttp; unit tests link them directly (stats.c reads the access log's
# dropped-line count).
PURE_SRCS   := proxy/config.c proxy/units.c proxy/h1.c proxy/accesslog.c proxy/log.c
PURE_OBJS   := $(PURE_SRCS:%.c=$(B)/%.o)
WEIRCTL_SRCS := proxy/weirctl.c
PROXY_SRCS  := $(filter-out $(PURE_SRCS) $(WEIRCTL_SRCS),$(wildcard proxy/*.c))
PROXY_OBJS  := $(PROXY_SRCS:%.c=$(B)/%.o)
LLHTTP_OBJS := $(B)/llhttp/api.o $(B)/llhttp/http.o $(B)/llhttp/llhttp.o

UNIT_SRCS   := $(wildcard tests/unit/test_*.c)
UNIT_BINS   := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/unit/%)
ITEST_SRCS  := $(wildcard tests/integration/test_*.c)
ITEST_BINS  := $(ITEST_SRCS:tests/integration/%.c=$(B)/tests/integration/%)
TESTLIB_SRCS := $(wildcard tests/lib/*.c)
TESTLIB_OBJS := $(TESTLIB_SRCS:%.c=$(B)/%.o)

.SECONDARY:
.PHONY: all deps test test-build asan tsan tsan-build fuzz fuzz-build nostats demo bench install clean check-purity format-check
all: $(B)/weir $(B)/weirctl $(B)/weir-upstream

# Installs what is missing, quietly when nothing is: `apt-get update` once, then one install.
deps:
	@missing=""; for p in $(DEPS_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(B)/llhttp/%.o: $(LLHTTP_SRC)/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(OPT) -g -I$(LLHTTP_INC) $(SAN) -w -c $< -o $@

$(B)/router/%.o: router/%.c $(wildcard include/rt/*.h include/common/*.h router/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ROUTER_CFLAGS) -c $< -o $@

$(ROUTER_LIB): $(ROUTER_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(B)/proxy/%.o: proxy/%.c $(wildcard include/*/*.h proxy/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(PROXY_CFLAGS) -c $< -o $@

$(B)/weir: $(PROXY_OBJS) $(PURE_OBJS) $(ROUTER_LIB) $(LLHTTP_OBJS)
	$(CC) $(LDFLAGS_SAN) -o $@ $^ $(LIBS)

$(B)/weirctl: $(B)/proxy/weirctl.o $(PURE_OBJS) $(ROUTER_LIB)
	$(CC) $(LDFLAGS_SAN) -o $@ $^ $(LIBS)

$(B)/weir-upstream: $(B)/tests/upstream/upstream.o
	$(CC) $(LDFLAGS_SAN) -o $@ $^ -lpthread

$(B)/tests/%.o: tests/%.c $(wildcard tests/lib/*.h tests/unit/*.h include/*/*.h proxy/*.c)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -Itests/lib -c $< -o $@

$(B)/tests/unit/%: $(B)/tests/unit/%.o $(PURE_OBJS) $(ROUTER_LIB)
	$(CC) $(LDFLAGS_SAN) -o $@ $^ -lcmocka -lxxhash -lpthread

# Units that need the TLS engine: test_tls drives it against an OpenSSL client in memory; test_stats includes
# stats.c, which reads its handshake-error counters.
$(B)/tests/unit/test_tls $(B)/tests/unit/test_stats: $(B)/tests/unit/%: $(B)/tests/unit/%.o $(B)/proxy/tls.o \
  $(PURE_OBJS) $(ROUTER_LIB)
	$(CC) $(LDFLAGS_SAN) -o $@ $^ -lcmocka -lssl -lcrypto -lxxhash -lpthread

$(B)/tests/integration/%: $(B)/tests/integration/%.o $(TESTLIB_OBJS)
	$(CC) $(LDFLAGS_SAN) -o $@ $^ -lcmocka -lpthread

# test_tls_control is a TLS client of the control listener itself.
$(B)/tests/integration/test_tls_control: $(B)/tests/integration/test_tls_control.o $(TESTLIB_OBJS)
	$(CC) $(LDFLAGS_SAN) -o $@ $^ -lcmocka -lssl -lcrypto -lpthread

# Micro-benchmarks of the pure decision plane (not tests): bench/micro_*.c.
BENCH_SRCS := $(wildcard bench/micro_*.c)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(B)/bench/%)
$(B)/bench/%: bench/%.c $(ROUTER_LIB) $(PURE_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -o $@ $^ -lxxhash -lpthread

test-build: all $(UNIT_BINS) $(ITEST_BINS) $(BENCH_BINS)

asan:
	@$(MAKE) --no-print-directory B=build/asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" test-build

# build/tsan: the binaries and the integration tests under ThreadSanitizer; tests/run.sh runs the multi-worker
# integration tests there with two workers each (WEIR_TEST_WORKERS).
tsan-build:
	@$(MAKE) --no-print-directory B=build/tsan OPT=-O1 SAN="-fsanitize=thread -fno-omit-frame-pointer" \
	  all $(ITEST_SRCS:tests/integration/%.c=build/tsan/tests/integration/%)

# build/fuzz: libFuzzer targets (tests/fuzz/fuzz_*.c) built with clang under ASan+UBSan, the code they reach
# instrumented for coverage. tests/run.sh runs each for FUZZ_SECONDS from tests/fuzz/corpus/<target>/: 20 s in
# `make test`, 600 s in `make fuzz`.
FUZZ_CC   ?= clang-14
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
fuzz-build:
	@$(MAKE) --no-print-directory B=build/fuzz CC=$(FUZZ_CC) OPT=-O1 \
	  SAN="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)

$(B)/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(ROUTER_LIB) $(PURE_OBJS) $(LLHTTP_OBJS)
	$(CC) $(PROXY_CFLAGS) -fsanitize=fuzzer -o $@ $< $(PURE_OBJS) $(ROUTER_LIB) $(LLHTTP_OBJS) -lxxhash -lpthread

fuzz: deps
	@$(MAKE) --no-print-directory fuzz-build
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-600} tests/run.sh build/fuzz

# promtool (for the metrics test) comes out of Debian's prometheus package without installing it: installing
# would also set up a Prometheus server service, which a test run has no business starting.
PROMTOOL := build/tools/promtool
$(PROMTOOL):
	@mkdir -p build/tools/deb
	@cd build/tools/deb && { apt-get download -q prometheus >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get download -q prometheus >/dev/null; }; } && \
	  dpkg-deb -x prometheus_*.deb x && cp x/usr/bin/promtool ../promtool
	@rm -rf build/tools/deb

# The whole suite, then the whole suite again under ASan+UBSan, then the multi-worker integration tests under
# ThreadSanitizer, then each fuzzer for 20 s; any failure, report or finding fails.
test: deps check-purity format-check $(PROMTOOL)
	@$(MAKE) --no-print-directory test-build
	@$(MAKE) --no-print-directory asan
	@$(MAKE) --no-print-directory tsan-build
	@$(MAKE) --no-print-directory fuzz-build
	@PATH="$(CURDIR)/build/tools:$$PATH" tests/run.sh build build/asan build/tsan build/fuzz

# Only the ThreadSanitizer run.
tsan: deps $(PROMTOOL)
	@$(MAKE) --no-print-directory tsan-build
	@PATH="$(CURDIR)/build/tools:$$PATH" tests/run.sh build/tsan

# The analysis templates of conf/analysis/ against build/weir, as Argo evaluates them (tests/run.sh runs them in
# `make test` too, against each build).
.PHONY: test-analysis
test-analysis: all $(PROMTOOL)
	@cd tests/analysis && PATH="$(CURDIR)/build/tools:$$PATH" WEIR_BIN=$(CURDIR)/build/weir GOTOOLCHAIN=local \
	  GOFLAGS="$$GOFLAGS -p=2" /usr/local/go/bin/go test -count=1 -v .

check-purity:
	@if grep -rnE '#include *[<"](uv|openssl/|llhttp)' router include/rt include/common; then \
	  echo "router/ must not include libuv, OpenSSL or llhttp"; exit 1; fi

format-check:
	@clang-format --dry-run --Werror $(wildcard proxy/*.c proxy/*.h router/*.c router/*.h include/*/*.h)

demo: deps all
	@tests/upstream/demo.sh

# The same weir with per-request counting compiled out (build/nostats/weir): bench/ compares the two to price
# the metrics.
nostats:
	@$(MAKE) --no-print-directory B=build/nostats EXTRA_CFLAGS=-DWEIR_NO_STATS build/nostats/weir

bench: deps all nostats
	@bench/run.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(B)/weir $(B)/weirctl $(DESTDIR)$(PREFIX)/bin/

clean:
	rm -rf build

# --- Argo Rollouts traffic-router plugin: integrations/argo-rollouts/ (its own Go module) -> build/ ---
# Built when a Go toolchain at least as new as the module's `go` line is found (GO=..., else go on PATH, else
# /usr/local/go/bin/go); otherwise `make` says so and builds the rest. GOTOOLCHAIN=local: never fetch a toolchain.
# CGO_ENABLED=0: a static binary, which runs in the controller's image whatever libc it has (or none).
GO ?= $(firstword $(shell command -v go 2>/dev/null) $(wildcard /usr/local/go/bin/go))
PLUGIN_DIR    := integrations/argo-rollouts
PLUGIN_BIN    := build/rollouts-plugin-trafficrouter-weir
PLUGIN_SRCS   := $(shell find $(PLUGIN_DIR) -name '*.go' ! -name '*_test.go') $(PLUGIN_DIR)/go.mod $(PLUGIN_DIR)/go.sum
PLUGIN_GO_MIN := $(shell sed -n 's/^go //p' $(PLUGIN_DIR)/go.mod)
PLUGIN_GO_HAS := $(if $(GO),$(shell GOTOOLCHAIN=local $(GO) env GOVERSION 2>/dev/null | sed 's/^go//'))
PLUGIN_GO_OK  := $(if $(PLUGIN_GO_HAS),$(filter $(PLUGIN_GO_MIN),$(firstword $(shell printf '%s\n' \
                   $(PLUGIN_GO_MIN) $(PLUGIN_GO_HAS) | sort -V))))
PLUGIN_GOENV  := GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
.PHONY: plugin plugin-deps plugin-test
all: plugin
deps: plugin-deps

plugin:
ifneq ($(PLUGIN_GO_OK),)
	@$(MAKE) --no-print-directory $(PLUGIN_BIN)
else
	@echo "NOT BUILT: $(PLUGIN_BIN) needs Go >= $(PLUGIN_GO_MIN); found $(if $(GO),$(GO) $(or $(PLUGIN_GO_HAS),(no version)),no go). Give GO=/path/to/go."
endif

$(PLUGIN_BIN): $(PLUGIN_SRCS)
	@mkdir -p $(dir $@)
	cd $(PLUGIN_DIR) && $(PLUGIN_GOENV) $(GO) build -p 2 -trimpath -o $(CURDIR)/$@ .

# Fetches the plugin's Go modules (to the Go module cache) so the build and tests need no network later.
plugin-deps:
ifneq ($(PLUGIN_GO_OK),)
	@cd $(PLUGIN_DIR) && $(PLUGIN_GOENV) $(GO) mod download
else
	@echo "NOT FETCHED: the plugin's Go modules need Go >= $(PLUGIN_GO_MIN); found $(if $(GO),$(GO) $(or $(PLUGIN_GO_HAS),(no version)),no go)."
endif

# Only the plugin's Go tests (make test runs them too, through tests/run.sh).
plugin-test: all $(B)/weirctl $(B)/weir-upstream
	@GO="$(GO)" tests/plugin-tests.sh $(B)

# The container image's build and runtime steps, read from docker/Dockerfile and run in debootstrap roots, then a
# request proxied by the resulting weir as its non-root user on a read-only root (docker/check.sh; as root; the
# roots are cached in build/docker-check/). Not part of `make test`: it needs the Debian mirror.
.PHONY: docker-check
docker-check:
	@docker/check.sh

# The Kubernetes manifests alone (tests/run.sh runs them in `make test` too): strict decoding into the Kubernetes and
# Argo Rollouts API types, Pod Security "restricted", `weir -t` on each weir.conf, and the checks in tests/manifests/.
.PHONY: test-manifests
test-manifests: $(B)/weir
	@cd tests/manifests && WEIR_BIN=$(CURDIR)/$(B)/weir GOTOOLCHAIN=local GOFLAGS="$$GOFLAGS -p=2" /usr/local/go/bin/go test -count=1 .

# --- make e2e: a real kube-apiserver and Argo Rollouts controller drive two weirs (tests/e2e/; README "End to end") ---
# Not part of make test. The first run builds kube-apiserver and the controller into $(WEIR_E2E_CACHE) (long).
E2E_DEPS_PKGS := etcd-server
.PHONY: e2e e2e-deps
e2e-deps:
	@for p in $(E2E_DEPS_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || m="$$m $$p"; done; \
	if [ -n "$$m" ]; then \
	  echo "installing:$$m"; apt-get update -q; \
	  for i in 1 2 3 4 5 6 7 8 9 10; do DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$m && exit 0; \
	    echo "dpkg busy, retrying"; sleep 15; done; exit 1; \
	fi
e2e: deps e2e-deps all
	GO="$(GO)" tests/e2e/run.sh
