//===- DSTypes.td - ds types --------------------------------*- tablegen -*-===//
//
// `!ds.qtensor`: a block-quantized tensor (weights stored quantized, or
// activations quantized on the fly).
//
//===----------------------------------------------------------------------===//

#ifndef DS_TYPES_TD
#define DS_TYPES_TD

include "ds/dialects/DS/IR/DSDialect.td"
include "mlir/IR/AttrTypeBase.td"

def DS_QTensorType : TypeDef<DS_Dialect, "QTensor"> {
  let mnemonic = "qtensor";
  let summary = "a block-quantized tensor";
  let description = [{
    A tensor of logical shape `shape` and element type `expressed` (f32,
    bf16 or f16), stored as `storage` values with one f32 scale per block:

    ```
    value = (q - zero_point) * scale          // zero_point only for ui4 / ui8
    ```

    `block` has one entry per axis: the block extent along that axis, `0`
    meaning the whole axis. One description covers every scheme:

    | scheme | type |
    |---|---|
    | int8 weight, per output channel | `!ds.qtensor<NxKxi8, f32, block = [1, 0]>` |
    | int4 weight, group 128, symmetric | `!ds.qtensor<NxKxi4, f32, block = [1, 128]>` |
    | int4 weight, group 64, zero points | `!ds.qtensor<NxKxui4, f32, block = [1, 64]>` |
    | FP8 weight, DeepSeek-V3 128x128 | `!ds.qtensor<NxKxf8E4M3FN, bf16, block = [128, 128]>` |
    | stacked experts, int8 per channel | `!ds.qtensor<ExNxKxi8, f32, block = [1, 1, 0]>` |
    | int8 activations, per token | `!ds.qtensor<?x?xKxi8, f32, block = [1, 1, 0]>` |
    | FP8 activations, 1x128 groups | `!ds.qtensor<?x?xKxf8E4M3FN, f32, block = [1, 1, 128]>` |

    Symmetric scales are `absmax / qmax` (127, 7, 448), asymmetric ones
    `(max - min) / (2^bits - 1)` with `zero_point = round(-min / scale)`.
    Weights of this type are `ds.param`s that also name their scales (and
    zero points); activations get it from `ds.quantize`. Ops that take a
    weight accept a `!ds.qtensor` wherever they accept a tensor and compute
    as if on its dequantized values; codegen keeps the values quantized.
  }];
  let parameters = (ins
    ArrayRefParameter<"int64_t", "logical shape">:$shape,
    "::mlir::Type":$storage_type,
    "::mlir::FloatType":$expressed_type,
    ArrayRefParameter<"int64_t", "block extent per axis (0: whole axis)">:$block
  );
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    int64_t getRank() const { return getShape().size(); }
    /// The tensor this type stands for: `shape` x `expressed`.
    ::mlir::RankedTensorType getLogicalType() const;
    /// Unsigned storage (ui4, ui8) carries zero points.
    bool hasZeroPoint() const;
  }];
}

def DS_Sparse24Type : TypeDef<DS_Dialect, "Sparse24"> {
  let mnemonic = "sparse24";
  let summary = "a 2:4 semi-structured sparse weight";
  let description = [{
    A tensor of logical shape `shape` and float `element_type` in which every
    group of 4 consecutive elements along the last axis holds at most 2
    non-zeros, stored compressed as sparse tensor cores consume it: the kept
    `values` (`[..., K/2]`, `element_type`) and 2-bit in-group indices
    (`meta`, `[..., ceil(K/8)]` u8: two indices a group in bits 0-1 and 2-3,
    two groups a byte, low nibble first). A `ds.param` of this type names
    both tensors; ops that take a weight accept it and compute as if on the
    dense tensor. `ds-sparsify-24` produces it by magnitude pruning.

    ```mlir
    %w = ds.param "w:values" meta "w:meta" : !ds.sparse24<4096x4096xbf16>
    ```
  }];
  let parameters = (ins
    ArrayRefParameter<"int64_t", "logical shape">:$shape,
    "::mlir::FloatType":$element_type
  );
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    int64_t getRank() const { return getShape().size(); }
    /// The dense tensor this type stands for.
    ::mlir::RankedTensorType getLogicalType() const;
  }];
}

#endif // DS_TYPES_TD
