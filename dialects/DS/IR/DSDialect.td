//===- DSDialect.td - The ds dialect definition -------------*- tablegen -*-===//
//
// The ds dialect describes Mixture-of-Experts transformer graphs at the level
// inference engineers reason about: norms, projections, RoPE, attention (incl.
// DeepSeek's multi-head latent attention), routers and the explicit MoE
// dispatch / grouped-matmul / combine steps.
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECT_TD
#define DS_DIALECT_TD

include "mlir/IR/OpBase.td"

def DS_Dialect : Dialect {
  let name = "ds";
  let cppNamespace = "::ds";
  let summary = "Mixture-of-Experts transformer graphs";
  let description = [{
    The `ds` dialect models decoder-only Mixture-of-Experts language models
    (DeepSeek-V2/V3, Mixtral, Qwen2-MoE, Qwen3-MoE) on value-semantic ranked
    tensors. Batch and sequence dimensions are usually dynamic; hidden sizes
    are static.

    Conventions shared by every op:

    * Activations are laid out `[batch, seq, ...]`; per-head tensors are
      `[batch, seq, heads, head_dim]` (see `ds.split_heads`).
    * Linear weights are stored `[out_features, in_features]` exactly as in
      Hugging Face checkpoints, and are named rather than inlined
      (`ds.param`).
    * All reductions (norm statistics, softmax, router scores) are computed
      in f32 whatever the storage type, and rounded back to the result type.
    * MoE ops work on flattened tokens `[N, hidden]`; `ds.moe` accepts any
      leading shape and its decomposition flattens.
    * The KV cache is a value: `ds.cache_update` returns the updated cache,
      and attention reads the whole cache, masking by absolute position
      (key `j` of the cache has position `j`).
  }];
  let useDefaultAttributePrinterParser = 1;
  let useDefaultTypePrinterParser = 1;
  // A sharded ds.param carries shard attributes (its grid's split axes).
  let dependentDialects = ["::mlir::shard::ShardDialect"];
  let extraClassDeclaration = [{
    void registerAttributes();
    void registerTypes();
  }];
}

#endif // DS_DIALECT_TD
