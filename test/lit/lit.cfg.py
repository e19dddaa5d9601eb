# -*- Python -*-
# lit configuration for the ds suites: lit + FileCheck from llvm-22-tools, the
# ds tools from the build tree, GoogleTest binaries run as lit tests.
import os

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "DS"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.excludes = ["lit.cfg.py", "lit.site.cfg.py", "CMakeLists.txt", "Inputs"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.ds_obj_root, "test", "lit")

config.substitutions.append(("%PATH%", config.environment["PATH"]))
config.substitutions.append(("%ds_src_root", config.ds_src_root))
config.substitutions.append(("%ds_obj_root", config.ds_obj_root))
config.substitutions.append(("%ds_lib_dir", config.ds_lib_dir))
config.substitutions.append(("%shlibext", config.llvm_shlib_ext))
# The NumPy reference needs Debian's python3-numpy, i.e. Debian's python3
# (a pyenv or venv python3 earlier on PATH may lack NumPy).
config.substitutions.append(("%numpy_python", "/usr/bin/python3"))

llvm_config.with_system_environment(
    ["HOME", "INCLUDE", "LIB", "TMP", "TEMP", "ASAN_OPTIONS", "UBSAN_OPTIONS",
     "LSAN_OPTIONS"])
llvm_config.use_default_substitutions()

tool_dirs = [config.ds_tools_dir, config.llvm_tools_dir]
tools = [
    ToolSubst(t, unresolved="fatal")
    for t in ("ds-opt", "ds-translate", "ds-run", "ds-make-tiny-model",
              "ds-compile", "ds-embed-example", "ds-tokenize")
]
llvm_config.add_tool_substitutions(tools, tool_dirs)
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

config.substitutions.append(("%ds_fuzz_dir", os.path.join(config.ds_obj_root, "test", "fuzz")))

for feature in config.ds_features:
    config.available_features.add(feature)

# Open MPI's launcher as the tests use it: CI runs as root, a 2-core
# machine runs 4 ranks, and a hung rank fails its test instead of the run.
config.substitutions.append(
    ("%mpirun",
     "timeout 300 mpirun --allow-run-as-root --oversubscribe --bind-to none"))

# Host ISA, for tests that need an AVX-512 CPU to say something.
try:
    with open("/proc/cpuinfo") as f:
        if " avx512f" in f.read():
            config.available_features.add("avx512")
except OSError:
    pass

# The `tokenizers` package (PyPI) in the virtual environment scripts/test.sh
# makes, for the tokenizer's exactness test.
tokenizers_python = os.path.join(config.ds_obj_root, "test-venv", "bin",
                                 "python")
if os.path.exists(tokenizers_python):
    config.available_features.add("tokenizers")
    import glob
    if glob.glob(os.path.join(config.ds_obj_root, "test-venv", "lib",
                              "python*", "site-packages", "transformers")):
        config.available_features.add("transformers")
config.substitutions.append(("%tokenizers_python", tokenizers_python))
