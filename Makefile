# The C core on its own: library, unit tests, sanitizer runs and C benchmarks.
# Sources: one folder per part of csrc/ (arena, pool, kernels, demo, platform);
# libtlalloc.so is the pool and the platform layer only (POOL_DIRS).
#   make test            build libtlalloc.a and run every tests/c/test_*.c
#   make test SAN=asan   the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test SAN=tsan   the same under ThreadSanitizer
#   make bench           build the C benchmarks into $(BUILD)/bench
# BUILD defaults to build/c[-$(SAN)], so the variants never mix objects.

CC      ?= cc
SAN     ?=
DEBUG   ?= 0
BUILD   ?= build/c$(if $(SAN),-$(SAN),)
# A test program that runs longer than this fails instead of hanging CI.
TEST_TIMEOUT ?= 600
CFLAGS_BASE := -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -Iinclude -Icsrc -pthread
ifeq ($(SAN),asan)
  CFLAGS_SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all -g -O1
else ifeq ($(SAN),tsan)
  CFLAGS_SAN := -fsanitize=thread -g -O1
else ifeq ($(DEBUG),1)
  CFLAGS_SAN := -O0 -g -DTLALLOC_DEBUG=1
else
  CFLAGS_SAN := -O2 -g
endif
ifneq ($(SAN),)
  CFLAGS_SAN += -DTLALLOC_DEBUG=1
endif
CFLAGS_ALL := $(CFLAGS_BASE) $(CFLAGS_SAN) $(EXTRA_CFLAGS)
LDLIBS  := -lm -pthread

# pool/preload.c defines malloc itself: it goes into libtlalloc.so only.
PRELOAD_C := csrc/pool/preload.c
CORE_SRC  := $(sort $(filter-out $(PRELOAD_C),$(wildcard csrc/*/*.c)))
CORE_OBJ  := $(patsubst csrc/%.c,$(BUILD)/obj/%.o,$(CORE_SRC))
# libtlalloc.so: the pool and what it calls (the platform layer), by folder.
POOL_DIRS := pool platform
POOL_SRC  := $(filter-out $(PRELOAD_C),$(sort $(foreach d,$(POOL_DIRS),$(wildcard csrc/$(d)/*.c))))
POOL_OBJ  := $(patsubst csrc/%.c,$(BUILD)/obj/%.o,$(POOL_SRC))
# The allocation benchmark's loop (bench/c/lib): in bench/c/alloc.c and in the
# extension (`tlalloc bench alloc`); not part of the library.
BENCH_LIB_SRC := bench/c/lib/bench_alloc.c
BENCH_LIB_OBJ := $(BUILD)/obj/bench/bench_alloc.o
TEST_SRC  := $(sort $(wildcard tests/c/test_*.c))
TEST_BIN  := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCH_SRC := $(sort $(wildcard bench/c/*.c))
BENCH_BIN := $(patsubst bench/c/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
HEADERS   := $(wildcard include/*.h include/tlalloc/*.h csrc/*.h csrc/*/*.h tests/c/*.h bench/c/lib/*.h)

.PHONY: all lib preload tools test bench clean
all: lib preload tools
lib: $(BUILD)/libtlalloc.a
# libtlalloc.so: the pool as the process's malloc (LD_PRELOAD; csrc/pool/preload.c).
# Only the symbols of csrc/pool/libtlalloc.map are exported; -z defs makes a
# missing object a link error instead of a failure at load time;
# -Bsymbolic-functions binds the library's own calls to the exported pool
# functions (malloc's jump to tl_pool_malloc) directly, not through the PLT:
# glibc-simple took 9% less CPU time.
preload: $(BUILD)/libtlalloc.so
# operator new's failure path calls the C++ runtime's, which may throw through
# preload.c's frames: they carry unwind tables.
$(BUILD)/obj/pool/preload.o: CFLAGS_ALL += -fexceptions

# liblivecount.so: a program's peak live bytes under any allocator (LD_PRELOAD
# before it; bench/c/lib/livecount.c). Standalone: no part of the pool.
tools: $(BUILD)/liblivecount.so
$(BUILD)/liblivecount.so: bench/c/lib/livecount.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fexceptions -fPIC -shared -o $@ $< -Wl,-z,defs -ldl -pthread

$(BUILD)/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fPIC -c $< -o $@
$(BUILD)/obj/bench/%.o: bench/c/lib/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Ibench/c/lib -c $< -o $@

$(BUILD)/libtlalloc.a: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libtlalloc.so: $(BUILD)/obj/pool/preload.o $(POOL_OBJ) csrc/pool/libtlalloc.map
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -shared -o $@ $(BUILD)/obj/pool/preload.o $(POOL_OBJ) \
	    -Wl,--version-script=csrc/pool/libtlalloc.map -Wl,-z,defs -Wl,-Bsymbolic-functions $(LDLIBS)

$(BUILD)/tests/%: tests/c/%.c $(BUILD)/libtlalloc.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< -o $@ $(BUILD)/libtlalloc.a $(LDLIBS)

# test_preload.c includes csrc/pool/preload.c (its functions renamed).
$(BUILD)/tests/test_preload: $(PRELOAD_C)

$(BUILD)/bench/%: bench/c/%.c $(BUILD)/libtlalloc.a $(BENCH_LIB_OBJ) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Ibench/c/lib $< -o $@ $(BENCH_LIB_OBJ) $(BUILD)/libtlalloc.a $(LDLIBS)

test: $(TEST_BIN) $(if $(SAN),,test-preload)
	@set -e; for t in $(TEST_BIN); do echo "== $$t"; timeout $(TEST_TIMEOUT) $$t; done; echo "C tests: all passed ($(words $(TEST_BIN)) programs, $(if $(SAN),$(SAN),plain) build)"

# libtlalloc.so under a real program (plain builds only: a sanitizer must own
# malloc): tests/c/preload_stress.c prints the same on the C library's malloc
# and under LD_PRELOAD, and says on stderr which malloc it ran on.
.PHONY: test-preload
# Then tests/c/preload_cxx.cpp the same way: C++'s operator new and delete
# (defined by the library too), when a C++ compiler is installed.
HAVE_CXX := $(shell command -v $(CXX) 2>/dev/null)
# Last, liblivecount.so (bench/c/lib/livecount.c): right peaks under the C
# library's malloc and libtlalloc.so, and the same output of both programs.
test-preload: $(BUILD)/libtlalloc.so $(BUILD)/tests/preload_stress $(if $(HAVE_CXX),$(BUILD)/tests/preload_cxx) \
    $(BUILD)/liblivecount.so $(BUILD)/tests/livecount_check
	@echo "== $(BUILD)/tests/preload_stress (C library malloc, then LD_PRELOAD=$(BUILD)/libtlalloc.so)"
	@set -e; timeout $(TEST_TIMEOUT) $(BUILD)/tests/preload_stress > $(BUILD)/tests/preload_stress.libc.out 2>/dev/null; \
	LD_PRELOAD=$(abspath $(BUILD)/libtlalloc.so) timeout $(TEST_TIMEOUT) $(BUILD)/tests/preload_stress \
	    > $(BUILD)/tests/preload_stress.pool.out 2> $(BUILD)/tests/preload_stress.pool.err; \
	grep -q "pool malloc: yes" $(BUILD)/tests/preload_stress.pool.err; \
	diff $(BUILD)/tests/preload_stress.libc.out $(BUILD)/tests/preload_stress.pool.out; \
	cat $(BUILD)/tests/preload_stress.pool.out
ifneq ($(HAVE_CXX),)
	@echo "== $(BUILD)/tests/preload_cxx (C++ runtime's operator new, then libtlalloc.so's)"
	@set -e; timeout $(TEST_TIMEOUT) $(BUILD)/tests/preload_cxx > $(BUILD)/tests/preload_cxx.libc.out 2>/dev/null; \
	LD_PRELOAD=$(abspath $(BUILD)/libtlalloc.so) timeout $(TEST_TIMEOUT) $(BUILD)/tests/preload_cxx \
	    > $(BUILD)/tests/preload_cxx.pool.out 2> $(BUILD)/tests/preload_cxx.pool.err; \
	grep -q "operator new from: libtlalloc.so" $(BUILD)/tests/preload_cxx.pool.err; \
	grep -q "pool counted new: yes" $(BUILD)/tests/preload_cxx.pool.err; \
	diff $(BUILD)/tests/preload_cxx.libc.out $(BUILD)/tests/preload_cxx.pool.out; \
	cat $(BUILD)/tests/preload_cxx.pool.out
	@echo "== $(BUILD)/tests/preload_cxx under liblivecount.so and libtlalloc.so: same output"
	@set -e; LD_PRELOAD="$(abspath $(BUILD)/liblivecount.so) $(abspath $(BUILD)/libtlalloc.so)" \
	    timeout $(TEST_TIMEOUT) $(BUILD)/tests/preload_cxx > $(BUILD)/tests/preload_cxx.live.out 2>/dev/null; \
	diff $(BUILD)/tests/preload_cxx.libc.out $(BUILD)/tests/preload_cxx.live.out
else
	@echo "== tests/c/preload_cxx.cpp skipped: no C++ compiler ($(CXX))"
endif
	@echo "== $(BUILD)/tests/livecount_check (liblivecount.so alone, then before libtlalloc.so)"
	@set -e; for pre in "" " $(abspath $(BUILD)/libtlalloc.so)"; do \
	    f=$$(mktemp); TLALLOC_LIVE_FILE=$$f LD_PRELOAD="$(abspath $(BUILD)/liblivecount.so)$$pre" \
	    timeout $(TEST_TIMEOUT) $(BUILD)/tests/livecount_check || { rm -f $$f; exit 1; }; rm -f $$f; done
	@echo "== $(BUILD)/tests/preload_stress under liblivecount.so and libtlalloc.so: same output"
	@set -e; LD_PRELOAD="$(abspath $(BUILD)/liblivecount.so) $(abspath $(BUILD)/libtlalloc.so)" \
	    timeout $(TEST_TIMEOUT) $(BUILD)/tests/preload_stress > $(BUILD)/tests/preload_stress.live.out 2>/dev/null; \
	diff $(BUILD)/tests/preload_stress.libc.out $(BUILD)/tests/preload_stress.live.out
$(BUILD)/tests/livecount_check: tests/c/livecount_check.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< -o $@ $(LDLIBS)
$(BUILD)/tests/preload_stress: tests/c/preload_stress.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< -o $@ $(LDLIBS)
$(BUILD)/tests/preload_cxx: tests/c/preload_cxx.cpp include/tlalloc/pool.h
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 -Wall -Wextra -Werror -Iinclude -pthread $(filter -O% -g,$(CFLAGS_SAN)) $< -o $@ -ldl

bench: $(BENCH_BIN)

clean:
	rm -rf build/c build/c-asan build/c-tsan

# ---- Pool: larson on the system malloc, a second binary -----------------------
# $(BUILD)/bench/larson (rule above) runs on the tlalloc pool; larson-system is
# the same source on the C library's malloc, also run under LD_PRELOAD of
# jemalloc and mimalloc by `tlalloc bench larson`.
bench: $(BUILD)/bench/larson-system
$(BUILD)/bench/larson-system: bench/c/larson.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -DLARSON_SYSTEM_MALLOC $< -o $@ $(LDLIBS)
