# st_proactor and libproactor: one Makefile for the library, the server and the tests.
#
#   make [all]                 library + server (release, or the SANITIZE variant)
#   make SANITIZE=address      same, built with ASan+UBSan into build/asan/
#   make SANITIZE=thread       same, built with TSan into build/tsan/
#   make tests                 the Criterion test binaries of the current variant
#   make test                  deps, then build and run everything for each of
#                              $(TEST_VARIANTS) x $(TEST_BACKENDS), then each fuzz
#                              target for $(TEST_FUZZ_SECONDS) s; ends with
#                              "N passed, N failed"
#   make run ARGS='--port 0'   deps, build, run ./st_proactor $(ARGS)
#   make check-symbols         every symbol exported by libproactor.so starts with px_
#   make check-layers          no circle among the server's files (scripts/check-layers.sh)
#   make deps                  check (and install) what the build and tests need
#   make bench                 Redis, NATS, ncat and st_proactor side by side (bench/RESULTS.md)
#   make bench-quick           a one-minute subset of make bench
#   make bench-cluster         the cluster tables of make bench only (bench/RESULTS-cluster.md)
#   make bench-compare REV=r   this tree against commit r, built side by side, run in one go
#   make bench-backends        epoll and io_uring side by side (tools/bench-backends.sh)
#   make fuzz, make fuzz-run SECONDS=N   libFuzzer targets: parsers, options, sessions
#   make stress                the long fault, load and abuse tests (tests/stress/)
#   make valgrind              the integration tests with the server under memcheck
#   make clean                 remove everything the build made
#
# Variables: CC (gcc; CC=clang works), SANITIZE (empty|address|thread), WERROR (1 adds
# -Werror), PX_DEBUG (1: the library's debug checks; default 1 with SANITIZE, else 0),
# TEST_VARIANTS (release address thread), ARGS (for run).

ifeq ($(origin CC),default)
CC := gcc
endif
SANITIZE ?=
WERROR ?= 1
TEST_VARIANTS ?= release address thread
# Every suite runs once per backend; one that is unavailable here is skipped, loudly.
TEST_BACKENDS ?= epoll io_uring
# Seconds each fuzz target runs in make test (make fuzz-run SECONDS=N for longer).
TEST_FUZZ_SECONDS ?= 15
ARGS ?=

# ---------------------------------------------------------------------------
# Variant: where objects and outputs go, and the sanitizer flags.

ifeq ($(SANITIZE),)
VARIANT := release
OUT := .
SAN_FLAGS :=
else ifeq ($(SANITIZE),address)
VARIANT := asan
OUT := build/asan
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else ifeq ($(SANITIZE),thread)
VARIANT := tsan
OUT := build/tsan
SAN_FLAGS := -fsanitize=thread
else
$(error SANITIZE must be empty, 'address' or 'thread' (got '$(SANITIZE)'))
endif

BUILD := build/$(VARIANT)
OBJ := $(BUILD)/obj

# PX_DEBUG: the library's debug checks (loop-thread-only calls, the stream state
# machine's transitions and invariants; src/proactor/internal.h) and post-mortem
# counters.  On in the sanitizer builds (and make fuzz), off in release.  The tests
# see it too, so those that provoke a check exist only where it is on.
ifeq ($(SANITIZE),)
PX_DEBUG ?= 0
else
PX_DEBUG ?= 1
endif
ifeq ($(PX_DEBUG),1)
DEBUG_FLAGS := -DPX_DEBUG
else ifeq ($(PX_DEBUG),0)
DEBUG_FLAGS :=
else
$(error PX_DEBUG must be 0 or 1 (got '$(PX_DEBUG)'))
endif

BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -O2 -g -pthread -Iinclude -MMD -MP
ifeq ($(WERROR),1)
BASE_CFLAGS += -Werror
endif
ALL_CFLAGS := $(BASE_CFLAGS) $(SAN_FLAGS) $(CFLAGS)
LIB_CFLAGS := $(ALL_CFLAGS) $(DEBUG_FLAGS) -fPIC -fvisibility=hidden -DPX_BUILDING_LIBRARY
TEST_CFLAGS := $(ALL_CFLAGS) $(DEBUG_FLAGS) -Isrc
ALL_LDFLAGS := -pthread $(SAN_FLAGS) $(LDFLAGS)
# liburing is linked only where something uses it.
LIB_LDLIBS := -Wl,--as-needed -luring -Wl,--no-as-needed $(LDLIBS)
# The server's own dependencies (hiredis: the cluster's Redis client).
SERVER_LDLIBS := -lhiredis

# ---------------------------------------------------------------------------
# Sources and outputs.

LIB_SRCS := $(wildcard src/proactor/*.c)
SERVER_SRCS := $(wildcard src/server/*.c)
# The file holding the server's main(): left out of what the unit tests link.
SERVER_MAIN := src/server/main.c
UNIT_SRCS := $(wildcard tests/unit/*.c)
INTEG_SRCS := $(wildcard tests/integration/*.c)
STRESS_SRCS := $(wildcard tests/stress/*.c)

LIB_OBJS := $(LIB_SRCS:src/proactor/%.c=$(OBJ)/proactor/%.o)
SERVER_OBJS := $(SERVER_SRCS:src/server/%.c=$(OBJ)/server/%.o)
SERVER_LIB_OBJS := $(filter-out $(SERVER_MAIN:src/server/%.c=$(OBJ)/server/%.o),$(SERVER_OBJS))
UNIT_OBJS := $(UNIT_SRCS:tests/unit/%.c=$(OBJ)/unit/%.o)
INTEG_OBJS := $(INTEG_SRCS:tests/integration/%.c=$(OBJ)/integration/%.o)
STRESS_OBJS := $(STRESS_SRCS:tests/stress/%.c=$(OBJ)/stress/%.o)
# The stress tests start the server and clients with the integration harness.
HARNESS_OBJ := $(OBJ)/integration/harness.o

LIB_A := $(OUT)/libproactor.a
LIB_SO := $(OUT)/libproactor.so
SERVER := $(OUT)/st_proactor
# The server's parts without main(), for the unit tests (an internal archive).
SERVER_A := $(BUILD)/libstserver.a

# Criterion under sanitizers (see each file): LeakSanitizer checks the test processes but
# not Criterion's runner; Criterion's sandbox is steered clear of TSan's memory map.
ifeq ($(SANITIZE),address)
TEST_SUPPORT_OBJS := $(OBJ)/support/criterion_lsan.o
else ifeq ($(SANITIZE),thread)
TEST_SUPPORT_OBJS := $(OBJ)/support/criterion_tsan.o
endif

OUTPUTS := $(LIB_A) $(LIB_SO)
ifneq ($(SERVER_SRCS),)
OUTPUTS += $(SERVER)
endif

TEST_BINS :=
ifneq ($(UNIT_SRCS),)
TEST_BINS += $(BUILD)/unit_tests
endif
ifneq ($(INTEG_SRCS),)
TEST_BINS += $(BUILD)/integration_tests
endif
ifneq ($(STRESS_SRCS),)
TEST_BINS += $(BUILD)/stress_tests
endif

RESULTS := build/test-results.txt

.PHONY: all tests test run deps clean check-symbols check-layers FORCE
.DEFAULT_GOAL := all

all: $(OUTPUTS)
ifeq ($(SERVER_SRCS),)
	@echo "note: no sources in src/server/: st_proactor not built"
endif

tests: all $(TEST_BINS)

# ---------------------------------------------------------------------------
# Compile. Every object depends on a stamp holding the compiler and flags, so that
# switching CC, WERROR or CFLAGS rebuilds the variant instead of mixing objects.

FLAGS_STAMP := $(BUILD)/flags
FLAGS_TEXT := $(CC) | $(LIB_CFLAGS) | $(TEST_CFLAGS) | $(ALL_LDFLAGS) | $(LIB_LDLIBS)

$(FLAGS_STAMP): FORCE
	@mkdir -p $(@D)
	@if [ "$$(cat $@ 2>/dev/null)" != '$(FLAGS_TEXT)' ]; then echo '$(FLAGS_TEXT)' > $@; fi

$(OBJ)/proactor/%.o: src/proactor/%.c $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -c $< -o $@

$(OBJ)/server/%.o: src/server/%.c $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(OBJ)/unit/%.o: tests/unit/%.c $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) -c $< -o $@

$(OBJ)/integration/%.o: tests/integration/%.c $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) -c $< -o $@

$(OBJ)/stress/%.o: tests/stress/%.c $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) -c $< -o $@

$(OBJ)/support/%.o: tests/support/%.c $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) -c $< -o $@

# ---------------------------------------------------------------------------
# Link.

$(LIB_A): $(LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

$(LIB_SO): $(LIB_OBJS)
	@mkdir -p $(@D)
	$(CC) -shared -o $@ $^ $(ALL_LDFLAGS) $(LIB_LDLIBS)

$(SERVER): $(SERVER_OBJS) $(LIB_A)
	@mkdir -p $(@D)
	$(CC) -o $@ $(SERVER_OBJS) $(LIB_A) $(ALL_LDFLAGS) $(SERVER_LDLIBS) $(LIB_LDLIBS)

$(SERVER_A): $(SERVER_LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

# Criterion provides main(): -lcriterion comes before our archives so that no archive
# member is pulled in to define it.
$(BUILD)/unit_tests: $(UNIT_OBJS) $(TEST_SUPPORT_OBJS) $(SERVER_A) $(LIB_A)
	$(CC) -o $@ $(UNIT_OBJS) $(TEST_SUPPORT_OBJS) -lcriterion $(SERVER_A) $(LIB_A) \
		$(ALL_LDFLAGS) $(SERVER_LDLIBS) $(LIB_LDLIBS)

$(BUILD)/integration_tests: $(INTEG_OBJS) $(TEST_SUPPORT_OBJS) $(LIB_A)
	$(CC) -o $@ $(INTEG_OBJS) $(TEST_SUPPORT_OBJS) -lcriterion $(LIB_A) \
		$(ALL_LDFLAGS) $(LIB_LDLIBS)

$(BUILD)/stress_tests: $(STRESS_OBJS) $(HARNESS_OBJ) $(TEST_SUPPORT_OBJS)
	$(CC) -o $@ $(STRESS_OBJS) $(HARNESS_OBJ) $(TEST_SUPPORT_OBJS) -lcriterion $(ALL_LDFLAGS)

-include $(LIB_OBJS:.o=.d) $(SERVER_OBJS:.o=.d) $(UNIT_OBJS:.o=.d) $(INTEG_OBJS:.o=.d) $(STRESS_OBJS:.o=.d) \
	$(TEST_SUPPORT_OBJS:.o=.d)

# ---------------------------------------------------------------------------
# Checks and runs.

# chatbench: load generator for fan-out servers (tools/chatbench/README.md); libc only.
.PHONY: chatbench
chatbench: $(BUILD)/chatbench
$(BUILD)/chatbench: tools/chatbench/chatbench.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(ALL_LDFLAGS)

# make bench: st_proactor (every backend x dispatch) beside Redis, NATS and ncat, in one
# run (tools/bench.sh, about 20 minutes); the tables are also written to bench/RESULTS.md.
# make bench-quick: a one-minute subset, printed only.
.PHONY: bench bench-quick bench-cluster bench-compare
bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory SANITIZE= all chatbench
	@mkdir -p bench
	@bash -c 'set -o pipefail; tools/bench.sh | tee bench/RESULTS.md'

bench-quick:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory SANITIZE= all chatbench
	@tools/bench.sh --quick

bench-cluster:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory SANITIZE= all chatbench
	@mkdir -p bench
	@bash -c 'set -o pipefail; tools/bench.sh --cluster | tee bench/RESULTS-cluster.md'

# make bench-compare REV=COMMIT: the commit is checked out in build/compare/ (a git
# worktree), built there, and both servers are run in turn, round by round.
REV ?= HEAD~1
bench-compare:
	@scripts/deps.sh bench >&2
	@$(MAKE) --no-print-directory SANITIZE= all chatbench >&2
	@rm -rf build/compare && git worktree prune && \
		git worktree add --detach -q build/compare '$(REV)' && \
		$(MAKE) --no-print-directory -C build/compare SANITIZE= all >/dev/null
	@tools/bench.sh --compare build/compare/st_proactor '$(REV)'; rc=$$?; \
		git worktree remove --force build/compare; exit $$rc

# Fuzzing with clang's libFuzzer (+ASan+UBSan): make fuzz builds build/fuzz/fuzz_*;
# make fuzz-run SECONDS=N runs each for N seconds (default 60), starting from the seed
# corpus in tests/fuzz/corpus/<target>; new finds go to build/fuzz/corpus-<target>.
# Targets: frame (framer + telnet filter), sanitize, cmd (commands and names), options
# (command line), session (whole sessions through a running loop, stateful).
FUZZ_TARGETS := frame sanitize cmd options session
FUZZ_CC ?= clang
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror -pthread \
	-fsanitize=fuzzer,address,undefined -Isrc -Iinclude -DPX_BUILDING_LIBRARY -DPX_DEBUG
SECONDS ?= 60
FUZZ_PROTO := src/server/proto.c
FUZZ_SRCS_frame := $(FUZZ_PROTO)
FUZZ_SRCS_sanitize := $(FUZZ_PROTO)
FUZZ_SRCS_cmd := $(FUZZ_PROTO)
FUZZ_SRCS_options := src/server/config.c $(LIB_SRCS)
FUZZ_SRCS_session := $(filter-out $(SERVER_MAIN),$(SERVER_SRCS)) $(LIB_SRCS)
.PHONY: fuzz fuzz-run
fuzz:
	@scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)

.SECONDEXPANSION:
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $$(FUZZ_SRCS_$$*) $(wildcard src/server/*.h src/proactor/*.h \
		include/*.h) tests/support/utf8_strict.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SRCS_$*) $< -o $@ $(SERVER_LDLIBS) $(LIB_LDLIBS)

fuzz-run: fuzz
	@scripts/fuzz-run.sh $(SECONDS) $(FUZZ_TARGETS)

# The long stress tests (tests/stress/, and the thread-race test of tests/unit/test_races.c)
# on the release build, both backends, one test at a time; the figures are collected in
# build/stress-report.txt.  About 15 minutes.
STRESS_RESULTS := build/stress-results.txt
.PHONY: stress
stress:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory SANITIZE= all tests
	@rm -f $(STRESS_RESULTS) build/stress-report.txt
	@for b in $(TEST_BACKENDS); do \
		TEST_JOBS=1 TEST_BINARY_TIMEOUT=3600 TEST_RESULTS=$(STRESS_RESULTS) \
			scripts/run-tests.sh "stress $$b" build/release/stress_tests \
			ST_STRESS=long ST_PROACTOR="$(CURDIR)/st_proactor" ST_BACKEND=$$b \
			ST_STRESS_REPORT=$(CURDIR)/build/stress-report.txt; \
		TEST_JOBS=1 TEST_BINARY_TIMEOUT=3600 TEST_RESULTS=$(STRESS_RESULTS) \
			scripts/run-tests.sh "races $$b" build/release/unit_tests 'CRITERION_TEST_PATTERN=races/*' \
			ST_STRESS=long PX_TEST_BACKEND=$$b; \
	done; \
	echo "==== figures (build/stress-report.txt)"; cat build/stress-report.txt; \
	awk -F'\t' '{ p += $$2; f += $$3 } END { print p " passed, " f " failed"; exit (f > 0) }' \
		$(STRESS_RESULTS)

# The integration tests with the server under Valgrind memcheck (scripts/valgrind-server.sh):
# epoll backend (Valgrind does not follow io_uring's shared memory), sanitizer-free release
# build; any memcheck error or leak fails the test whose server had it.  Reports in
# build/valgrind/.  Left out: the two tests that cannot work under Valgrind (it takes
# descriptors of its own, so the descriptor-limit test counts wrong; and one test asks for
# the io_uring backend).
VALGRIND_SKIP := !(chat_fds/*|startup/backend_is_logged)
.PHONY: valgrind
valgrind:
	@scripts/deps.sh valgrind
	@$(MAKE) --no-print-directory SANITIZE= all tests
	@rm -rf build/valgrind $(VALGRIND_RESULTS) && mkdir -p build/valgrind
	@TEST_JOBS=1 TEST_RESULTS=$(VALGRIND_RESULTS) scripts/run-tests.sh "valgrind integration" \
		build/release/integration_tests ST_PROACTOR="$(CURDIR)/scripts/valgrind-server.sh" \
		ST_BACKEND=epoll ST_TEST_SLOW=1 VALGRIND_LOGS="$(CURDIR)/build/valgrind" \
		'CRITERION_TEST_PATTERN=$(VALGRIND_SKIP)'; \
	rc=$$?; \
	runs=$$(ls build/valgrind | wc -l); \
	bad=$$(grep -l . build/valgrind/*.log 2>/dev/null | wc -l); \
	echo "valgrind: $$runs server runs, $$bad with a memcheck report"; \
	for f in $$(grep -l . build/valgrind/*.log 2>/dev/null); do echo "== $$f"; head -n 40 $$f; done; \
	[ $$rc -eq 0 ] && [ $$bad -eq 0 ]
VALGRIND_RESULTS := build/valgrind-results.txt

# Both backends side by side (fan-out and idle memory), in one run.
.PHONY: bench-backends
bench-backends:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory SANITIZE= all chatbench
	tools/bench-backends.sh $(ROUNDS)

deps:
	@scripts/deps.sh

# Exported symbols (uppercase nm types) must carry the px_ prefix.
check-symbols: $(LIB_SO)
	@bad=$$(nm -D --defined-only $(LIB_SO) | awk 'NF >= 3 && $$2 ~ /^[A-Z]$$/ && \
		$$3 !~ /^px_/ && $$3 !~ /^(_init|_fini|_edata|_end|__bss_start)$$/ { print $$3 }'); \
	if [ -n "$$bad" ]; then \
		echo "check-symbols: $(LIB_SO) exports symbols without the px_ prefix:"; \
		echo "$$bad" | sed 's/^/    /'; exit 1; \
	fi; \
	echo "check-symbols: $(LIB_SO) exports only px_ symbols"

# The server's files call each other without a circle: the core reaches its doors and
# its bus only through their tables (DESIGN.md 3a).
check-layers: $(SERVER)
	@scripts/check-layers.sh $(OBJ)/server

run:
	@scripts/deps.sh
	@$(MAKE) --no-print-directory all
	exec $(SERVER) $(ARGS)

# For each variant: build it (a failure counts and the next variant still runs), check
# the exported symbols (release), run its test binaries; then one total line.
test:
	@scripts/deps.sh
	@mkdir -p build && rm -f $(RESULTS) build/stress-report.txt
	@for v in $(TEST_VARIANTS); do \
		case $$v in \
		release) san= dir=build/release out=. ;; \
		address) san=address dir=build/asan out=build/asan ;; \
		thread) san=thread dir=build/tsan out=build/tsan ;; \
		*) echo "make test: unknown variant '$$v' (release, address, thread)"; \
		   printf '%s\t0\t1\t0\n' "$$v build" >> $(RESULTS); continue ;; \
		esac; \
		echo "==== $$v: build"; \
		if ! $(MAKE) --no-print-directory SANITIZE=$$san all tests; then \
			echo "[$$v] BUILD FAILED"; \
			printf '%s\t0\t1\t0\n' "$$v build" >> $(RESULTS); continue; \
		fi; \
		if [ $$v = release ]; then \
			for c in check-symbols check-layers; do \
			if $(MAKE) --no-print-directory SANITIZE= $$c; then \
				printf '%s\t1\t0\t0\n' "$$v $$c" >> $(RESULTS); \
			else printf '%s\t0\t1\t0\n' "$$v $$c" >> $(RESULTS); fi; \
			done; \
		fi; \
		noaslr=; [ $$v = thread ] && noaslr=--no-aslr; \
		for b in $(TEST_BACKENDS); do \
		if [ -x $$dir/unit_tests ]; then \
			TEST_RESULTS=$(RESULTS) scripts/run-tests.sh $$noaslr "$$v $$b unit" $$dir/unit_tests \
				PX_TEST_BACKEND=$$b; \
		else echo "[$$v unit] no tests in tests/unit/"; fi; \
		if [ -x $$dir/integration_tests ]; then \
			TEST_RESULTS=$(RESULTS) scripts/run-tests.sh $$noaslr "$$v $$b integration" \
				$$dir/integration_tests ST_PROACTOR="$(CURDIR)/$$out/st_proactor" ST_BACKEND=$$b; \
		else echo "[$$v integration] no tests in tests/integration/"; fi; \
		if [ -x $$dir/stress_tests ] && [ $$v != thread ]; then \
			TEST_JOBS=1 TEST_RESULTS=$(RESULTS) scripts/run-tests.sh "$$v $$b stress" \
				$$dir/stress_tests ST_PROACTOR="$(CURDIR)/$$out/st_proactor" ST_BACKEND=$$b \
				ST_STRESS_REPORT=$(CURDIR)/build/stress-report.txt; \
		fi; \
		done; \
	done; \
	echo "==== fuzz: each target for $(TEST_FUZZ_SECONDS) s"; \
	if $(MAKE) --no-print-directory fuzz; then \
		TEST_RESULTS=$(RESULTS) scripts/fuzz-run.sh $(TEST_FUZZ_SECONDS) $(FUZZ_TARGETS); \
	else printf '%s\t0\t1\t0\n' "fuzz build" >> $(RESULTS); fi; \
	echo "==== summary"; \
	awk -F'\t' '{ p += $$2; f += $$3; s += $$4; \
		if ($$3 > 0) bad = bad "    failed: " $$1 " (" $$3 ")\n"; \
		if ($$4 > 0) sk = sk "    SKIPPED: " $$1 " (" $$4 ")\n" } \
		END { printf "%s%s", bad, sk; \
		      line = p " passed, " f " failed"; if (s > 0) line = line ", " s " skipped"; \
		      print line; exit (f > 0 || NR == 0) }' $(RESULTS)

clean:
	rm -rf build st_proactor libproactor.a libproactor.so

FORCE:
