//===- version_test.cpp - ds runtime C API basics -------------------------===//
//
// Tests of the version and status entry points of ds/runtime.h.
//
//===----------------------------------------------------------------------===//

#include "ds/runtime.h"

#include <gtest/gtest.h>

#include <string>

TEST(RuntimeVersion, StringMatchesNumber) {
  std::string expected = std::to_string(DS_VERSION_MAJOR) + "." +
                         std::to_string(DS_VERSION_MINOR) + "." +
                         std::to_string(DS_VERSION_PATCH);
  EXPECT_EQ(expected, ds_version_string());
  EXPECT_EQ(DS_VERSION_NUMBER, ds_version_number());
}

TEST(RuntimeVersion, AbiCheck) {
  EXPECT_EQ(DS_OK, ds_check_abi(DS_VERSION_NUMBER));
  EXPECT_EQ(DS_UNAVAILABLE, ds_check_abi(DS_VERSION_NUMBER + 10000));
}

TEST(RuntimeStatus, EveryCodeHasAName) {
  for (int c = DS_OK; c <= DS_RESOURCE_EXHAUSTED; ++c)
    EXPECT_STRNE("unknown status", ds_status_code_string(c));
  EXPECT_STREQ("unknown status", ds_status_code_string(1234));
}
