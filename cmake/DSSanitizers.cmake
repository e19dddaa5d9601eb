#===- DSSanitizers.cmake - ASan + UBSan option -----------------------------===#
#
# DS_ENABLE_SANITIZERS instruments everything ds builds (not the prebuilt
# libMLIR.so/libLLVM.so). UBSan findings abort so that tests fail on them.
#===----------------------------------------------------------------------===#
if(DS_ENABLE_SANITIZERS)
  set(_ds_san -fsanitize=address,undefined -fno-sanitize-recover=undefined
              -fno-omit-frame-pointer)
  add_compile_options(${_ds_san})
  add_link_options(-fsanitize=address,undefined)
endif()
