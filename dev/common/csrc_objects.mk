# dev/common/csrc_objects.mk - the build rules every harness Makefile of dev/ shares: the output
# folder, csrc/cuda/*.cu -> $(OUT)/*.o with nvcc, csrc/cpu/*.c -> $(OUT)/cpu_*.o (the C reference,
# with the C compiler), and the lists the harness rules depend on (CPU_OBJ, CSRC_HEADERS, COMMON).
# Include it after the first target (`all`, the default goal) with ROOT, OUT, NVCC, NVFLAGS, CC
# and CFLAGS set.

CSRC_HEADERS := $(wildcard $(ROOT)/csrc/cuda/*.cuh $(ROOT)/csrc/cuda/*.h $(ROOT)/csrc/include/*.h)
CPU_SRC      := $(wildcard $(ROOT)/csrc/cpu/*.c)
CPU_OBJ      := $(patsubst $(ROOT)/csrc/cpu/%.c,$(OUT)/cpu_%.o,$(CPU_SRC))
COMMON       := $(wildcard $(ROOT)/dev/common/*.h)

$(OUT):
	mkdir -p $(OUT)

$(OUT)/%.o: $(ROOT)/csrc/cuda/%.cu $(CSRC_HEADERS) | $(OUT)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(OUT)/cpu_%.o: $(ROOT)/csrc/cpu/%.c $(wildcard $(ROOT)/csrc/cpu/*.h) $(wildcard $(ROOT)/csrc/include/*.h) | $(OUT)
	$(CC) $(CFLAGS) -c $< -o $@
