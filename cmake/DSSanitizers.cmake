#===- DSSanitizers.cmake - ASan + UBSan, or TSan ---------------------------===#
#
# DS_ENABLE_SANITIZERS instruments everything ds builds (not the prebuilt
# libMLIR.so/libLLVM.so) with ASan + UBSan; UBSan findings abort so that
# tests fail on them. DS_ENABLE_TSAN instruments it with ThreadSanitizer
# instead (the runtime's concurrency: batcher, sessions, thread pool).
#===----------------------------------------------------------------------===#
if(DS_ENABLE_SANITIZERS AND DS_ENABLE_TSAN)
  message(FATAL_ERROR "DS_ENABLE_SANITIZERS and DS_ENABLE_TSAN exclude each other")
endif()
if(DS_ENABLE_SANITIZERS)
  set(_ds_san -fsanitize=address,undefined -fno-sanitize-recover=undefined
              -fno-omit-frame-pointer)
  add_compile_options(${_ds_san})
  add_link_options(-fsanitize=address,undefined)
endif()
if(DS_ENABLE_TSAN)
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
endif()
