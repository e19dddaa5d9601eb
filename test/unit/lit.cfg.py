# -*- Python -*-
# Runs every GoogleTest binary in <build>/unittests (names ending in "tests")
# as lit tests, so that unit and lit suites report one count.
import os

import lit.formats

config.name = "DS-Unit"
config.suffixes = []
config.test_source_root = os.path.join(config.ds_obj_root, "unittests")
config.test_exec_root = config.test_source_root
config.test_format = lit.formats.GoogleTest(".", "tests")
for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "HOME", "TMP", "TEMP"):
    if var in os.environ:
        config.environment[var] = os.environ[var]
