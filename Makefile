# tidegate - one GNU Makefile. Objects go to build/<variant>/.
#   make run     install what is missing, build (release), run on 127.0.0.1:8080
#   make test    install what is missing, build, run every test (unit, integration,
#                integration again under ASan+UBSan, a short fuzz run of every target)
#   make fuzz    long fuzz runs (FUZZ_SECONDS each)
#   make bench   benchmarks against peers (bench/)
#   make format  clang-format the sources

SHELL   := /bin/bash
VARIANT ?= release
BUILD   := build/$(VARIANT)
LLHTTP  := /usr/share/llhttp
PY      := /usr/bin/python3

ifeq ($(VARIANT),fuzz)
CC      := clang
endif
CC      ?= gcc

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-missing-field-initializers
ifneq ($(CI),)
WARN    += -Werror
endif
BASE    := -std=c11 -D_GNU_SOURCE -pthread -Isrc -Iinclude -I/usr/share/include/llhttp -MMD -MP

CFLAGS_release := -O2 -g
CFLAGS_debug   := -O0 -g -DTG_DEBUG
CFLAGS_asan    := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                  -fno-sanitize-recover=undefined -DTG_DEBUG
CFLAGS_fuzz    := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
                  -fno-sanitize-recover=undefined -DTG_DEBUG -DTG_FUZZ
CFLAGS_tsan    := -O1 -g -fno-omit-frame-pointer -fsanitize=thread -DTG_DEBUG
LDFLAGS_asan   := -fsanitize=address,undefined
LDFLAGS_tsan   := -fsanitize=thread
LDFLAGS_fuzz   := -fsanitize=fuzzer,address,undefined

CFLAGS  := $(BASE) $(CFLAGS_$(VARIANT)) $(EXTRA_CFLAGS)
LDFLAGS := -pthread $(LDFLAGS_$(VARIANT))
LIBS    := -lz -lcrypto -llz4 -lcares -lxxhash -luring

SRC      := $(shell find src -name '*.c' ! -path src/app/main.c | sort)
OBJ      := $(SRC:%.c=$(BUILD)/%.o)
LLHTTP_O := $(BUILD)/llhttp/llhttp.o $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o
LIB      := $(BUILD)/libtidegate.a
BIN      := $(BUILD)/tidegate
UNIT_SRC := $(shell find tests/unit -name 'test_*.c' | sort)
UNIT_BIN := $(UNIT_SRC:%.c=$(BUILD)/%)
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:fuzz/%.c=build/fuzz/%)

FUZZ_SECONDS ?= 600
FUZZ_SHORT   ?= 20

.PHONY: all build run test unit integration integration-asan fuzz fuzz-short bench format \
        deps deps-test clean
all: build
build: $(BIN) $(BUILD)/tidegate-bench $(BUILD)/echo-http

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) -c $< -o $@

# llhttp's generated C fails only -Wunused-parameter: its own, milder flags.
# Strict mode: it checks what lenient mode skips (the CRLF after chunk data,
# among others), which a gate in front of other servers must not let through.
$(BUILD)/llhttp/%.o: $(LLHTTP)/%.c
	@mkdir -p $(@D)
	$(CC) $(filter-out -MMD -MP,$(CFLAGS)) -O2 -DLLHTTP_STRICT_MODE=1 -Wall -Wextra \
	      -Wno-unused-parameter -c $< -o $@

$(LIB): $(OBJ) $(LLHTTP_O)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/src/app/main.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

# The push load client (bench/README.md): main in tools/tidegate-bench.c, the rest in
# tools/bench/; net/ws.h from the library.
BENCH_OBJ := $(patsubst %.c,$(BUILD)/%.o,tools/tidegate-bench.c $(sort $(wildcard tools/bench/*.c)))
$(BUILD)/tidegate-bench: $(BENCH_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $(filter %.o %.a,$^) $(LIBS) -o $@

# The HTTP echo server behind nginx in bench/gate.sh: tidegate's loop and HTTP layer.
$(BUILD)/echo-http: tools/echo-http.c $(LIB)
	$(CC) $(CFLAGS) $(WARN) $< $(LIB) $(LDFLAGS) $(LIBS) -o $@

$(BUILD)/tests/unit/%: tests/unit/%.c $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) -Wno-unused-parameter $< $(LIB) $(LDFLAGS) $(LIBS) -lcmocka -o $@

# libtidegate-backend (include/tidegate/backend_lib.h): lib/backend/ plus its own
# object of the wire codec (src/gate/wire.c), nothing else of src/; the example
# backends and the library's unit test link it with -llz4 only.
BLIB     := $(BUILD)/libtidegate-backend.a
BLIB_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(sort $(wildcard lib/backend/*.c))) \
            $(BUILD)/lib/backend/gate_wire.o
EXAMPLES := $(BUILD)/examples/echo $(BUILD)/examples/counter

build: $(BLIB) $(EXAMPLES) $(BUILD)/tidegate-cli

$(BUILD)/lib/backend/gate_wire.o: src/gate/wire.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) -c $< -o $@

$(BLIB): $(BLIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/examples/%: examples/%.c $(BLIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) $< $(BLIB) $(LDFLAGS) -llz4 -o $@

$(BUILD)/tests/unit/gate/test_backend_lib: tests/unit/gate/test_backend_lib.c $(BLIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) -Wno-unused-parameter -Ilib $< $(BLIB) $(LDFLAGS) -llz4 -lcmocka -o $@

# The command-line client and stand-in backend (docs/cli.md): main in tools/tidegate-cli.c,
# the rest in tools/cli/; the backend link from libtidegate-backend, JSON and WebSocket
# helpers from the library (after it: both hold the wire codec, the backend library's wins).
CLI_OBJ := $(patsubst %.c,$(BUILD)/%.o,tools/tidegate-cli.c $(sort $(wildcard tools/cli/*.c)))
$(BUILD)/tidegate-cli: $(CLI_OBJ) $(BLIB) $(LIB)
	$(CC) $(LDFLAGS) $(CLI_OBJ) $(BLIB) $(LIB) $(LIBS) -o $@

build/fuzz/%: fuzz/%.c
	$(MAKE) --no-print-directory VARIANT=fuzz build/fuzz/libtidegate.a
	clang $(BASE) $(CFLAGS_fuzz) $(WARN) $< build/fuzz/libtidegate.a $(LDFLAGS_fuzz) $(LIBS) -o $@

deps:
	@bash scripts/deps.sh build
deps-test:
	@bash scripts/deps.sh test

run: deps
	@$(MAKE) --no-print-directory VARIANT=release build
	exec build/release/tidegate $(ARGS)

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

integration: build
	TIDEGATE_BIN=$(abspath $(BIN)) $(PY) -m pytest -q -p no:cacheprovider tests/integration $(PYTEST_ARGS)

fuzz-short: $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do n=$${f#build/fuzz/fuzz_}; mkdir -p build/fuzz/corpus/$$n; \
	  echo "== $$f ($(FUZZ_SHORT) s)"; \
	  $$f -max_total_time=$(FUZZ_SHORT) -print_final_stats=1 $$(test -f fuzz/$$n.dict && echo -dict=fuzz/$$n.dict) \
	    build/fuzz/corpus/$$n fuzz/corpus/$$n 2>&1 | tail -n 12; test $${PIPESTATUS[0]} -eq 0; done

fuzz: $(FUZZ_BIN)
	@$(MAKE) --no-print-directory fuzz-short FUZZ_SHORT=$(FUZZ_SECONDS)

# Every test: unit tests under ASan+UBSan, the integration suite on the release
# build and again on the sanitized build, then every fuzz target briefly.
test: deps-test
	@$(MAKE) --no-print-directory VARIANT=asan unit
	@$(MAKE) --no-print-directory VARIANT=release integration
	@$(MAKE) --no-print-directory VARIANT=asan integration
	@$(MAKE) --no-print-directory fuzz-short

bench:
	@bash scripts/deps.sh bench
	@$(MAKE) --no-print-directory VARIANT=release build
	bash bench/http.sh
	bash bench/gate.sh
	$(PY) bench/wire.py
	bash bench/compare.sh

format:
	clang-format -i $$(find src tests fuzz tools bench -name '*.[ch]')

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
