# dev/common/csrc_objects.mk - what every harness Makefile of dev/ shares. Include it first, with
# ROOT (the repository) and BIN (the output folder) set; the Makefile then sets .DEFAULT_GOAL.
#   flags:   from csrc/build_flags.py, the source setup.py builds the package with, so a passing
#            harness vouches for the binary users get (targets: FLASH_ATTN_C_CUDA_ARCHS, as there)
#   rules:   any csrc/cuda/<folder>/<name>.cu -> $(BIN)/<name>.o (nvcc), csrc/cpu/<name>.c ->
#            $(BIN)/cpu_<name>.o (the C reference, with the C compiler)
#   lists:   CUDA_DIRS, CSRC_HEADERS, CPU_OBJ, COMMON; $(call cuda_obj,SOURCES) names objects

NVCC     ?= nvcc
CC       ?= cc
PYTHON   ?= python3
FLAGS_PY := $(PYTHON) $(ROOT)/csrc/build_flags.py
CUDA_DIRS := $(shell $(FLAGS_PY) cuda-dirs $(ROOT))
INC      := $(shell $(FLAGS_PY) includes $(ROOT))
GENCODE  := $(shell $(FLAGS_PY) gencode)
NVFLAGS  := $(shell $(FLAGS_PY) nvcc) $(GENCODE) $(INC)
CFLAGS   := $(shell $(FLAGS_PY) cflags) $(INC)
ifeq ($(strip $(NVFLAGS)),)
$(error csrc/build_flags.py gave no flags: is $(PYTHON) on PATH?)
endif

CSRC_HEADERS := $(foreach d,$(CUDA_DIRS),$(wildcard $(d)/*.cuh $(d)/*.h)) $(wildcard $(ROOT)/csrc/include/*.h)
CPU_SRC      := $(wildcard $(ROOT)/csrc/cpu/*.c)
CPU_OBJ      := $(patsubst $(ROOT)/csrc/cpu/%.c,$(BIN)/cpu_%.o,$(CPU_SRC))
COMMON       := $(wildcard $(ROOT)/dev/common/*.h)
cuda_src = $(foreach p,$(1),$(wildcard $(addsuffix /$(p),$(CUDA_DIRS))))
cuda_obj = $(patsubst %.cu,$(BIN)/%.o,$(notdir $(1)))

vpath %.cu $(CUDA_DIRS)

$(BIN):
	mkdir -p $(BIN)

$(BIN)/%.o: %.cu $(CSRC_HEADERS) | $(BIN)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(BIN)/cpu_%.o: $(ROOT)/csrc/cpu/%.c $(wildcard $(ROOT)/csrc/cpu/*.h) $(wildcard $(ROOT)/csrc/include/*.h) | $(BIN)
	$(CC) $(CFLAGS) -c $< -o $@
