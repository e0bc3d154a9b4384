"""Creating models by name, forward/backward, missing inputs, input errors, processor."""

import numpy as np
import pytest
import torch

import mmzoo
from mmzoo.errors import InputError, NameSyntaxError

#: A small scratch text encoder (the scratch tokenizer needs vocab_size >= 258).
TINY_TEXT = "vocab_size=300,embed_dim=16,hidden_size=16"

TEXT_ENCODERS = [f"lstm({TINY_TEXT})", f"gru({TINY_TEXT},bidirectional=True)",
                 "transformer(vocab_size=300,dim=16,depth=2,heads=2)"]
CORE_FUSIONS = ["concat", "gated", "attention"]


def test_the_readme_example(images, token_ids):
    model = mmzoo.create("resnet+lstm/concat", num_classes=10)
    assert model.inputs == ("image", "text")
    assert model(image=images, text=token_ids).shape == (2, 10)
    assert model(image=images).shape == (2, 10)
    out = model(image=images, text=token_ids, present={"text": torch.tensor([True, False])})
    assert out.shape == (2, 10)
    assert model.name.startswith("resnet18(") and "/concat(" in model.name
    assert mmzoo.create(model.name).name == model.name


def test_embedding_when_num_classes_is_zero(images, token_ids):
    model = mmzoo.create("test_resnet+gru/gated")
    emb = model(image=images, text=token_ids)
    assert emb.shape == (2, model.num_features)


@pytest.mark.parametrize("text", TEXT_ENCODERS)
@pytest.mark.parametrize("fusion", CORE_FUSIONS)
def test_forward_backward_matrix(text, fusion, images, token_ids):
    model = mmzoo.create(f"test_resnet+{text}/{fusion}", num_classes=4)
    logits = model(image=images, text=token_ids)
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert model.head[1].weight.grad is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders["text"].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders["image"].parameters())


def test_same_modality_twice_gets_numbered_slots(images, token_ids):
    model = mmzoo.create(f"cnn+lstm({TINY_TEXT})+cnn(channels=(8,))/attention", num_classes=2)
    assert model.inputs == ("image", "text", "image_2")
    assert model(image=images, text=token_ids, image_2=images).shape == (2, 2)


@pytest.mark.parametrize("fusion", CORE_FUSIONS)
def test_missing_input_is_masked_exactly(fusion, images, token_ids):
    model = mmzoo.create(f"cnn+lstm({TINY_TEXT})/{fusion}", num_classes=3).eval()
    present = {"text": torch.tensor([True, False])}
    out = model(image=images, text=token_ids, present=present)
    other_text = torch.randint(1, 300, token_ids.shape)
    again = model(image=images, text=other_text, present=present)
    assert torch.allclose(out[1], again[1], atol=1e-6)  # sample 1's text is ignored
    omitted = model(image=images)
    assert torch.allclose(omitted, model(image=images, text=token_ids,
                                         present={"text": torch.tensor([False, False])}), atol=1e-6)
    assert torch.allclose(out[1], omitted[1], atol=1e-6)


def test_empty_text_counts_as_missing(images):
    model = mmzoo.create(f"cnn+lstm({TINY_TEXT})/concat", num_classes=3).eval()
    ids = torch.randint(1, 300, (2, 5))
    empty = ids.clone()
    empty[1] = 0
    out = model(image=images, text=empty)
    assert torch.allclose(out[1], model(image=images[1:2])[0], atol=1e-6)
    with pytest.raises(InputError, match="no input present"):
        model(text=empty)


def test_dict_text_input_matches_ids(images, token_ids):
    model = mmzoo.create(f"cnn+gru({TINY_TEXT})/concat", num_classes=3).eval()
    as_dict = {"input_ids": token_ids, "attention_mask": token_ids != 0}
    assert torch.equal(model(image=images, text=token_ids), model(image=images, text=as_dict))


def test_padding_never_leaks(images):
    model = mmzoo.create(f"cnn+lstm({TINY_TEXT})/concat", num_classes=3).eval()
    short = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[5, 6, 7, 0, 0, 0, 0]])
    a = model(image=images[:1], text=short)
    b = model(image=images[:1], text=padded)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"audio": torch.zeros(2, 10)}, "unknown input"),
        ({"image": torch.zeros(2, 1, 32, 32)}, r"shape \(batch, 3, height, width\)"),
        ({"image": torch.zeros(2, 3, 32, 32, dtype=torch.long)}, "floating-point"),
        ({"image": [[0.0]]}, "must be a torch.Tensor"),
        ({"text": torch.zeros(2, 4)}, "integer tensor of token ids"),
        ({"text": {"attention_mask": torch.ones(2, 3)}}, "input_ids"),
        ({"image": torch.zeros(2, 3, 32, 32), "text": torch.ones(3, 4, dtype=torch.long)}, "batch size"),
        ({}, "no input given"),
        ({"image": torch.zeros(2, 3, 32, 32), "present": {"image": torch.tensor([True])}}, "present"),
        ({"text": torch.full((2, 3), 999)}, r"token ids must be in \[0, 300\)"),
    ],
)
def test_bad_inputs_raise_input_error(kwargs, message):
    model = mmzoo.create(f"cnn+lstm({TINY_TEXT})/concat", num_classes=3)
    with pytest.raises(InputError, match=message):
        model(**kwargs)


def test_inputs_must_be_named(images):
    model = mmzoo.create(f"cnn+lstm({TINY_TEXT})/concat", num_classes=3)
    with pytest.raises(InputError, match=r"pass inputs by name, e\.g\. model\(image=\.\.\., text=\.\.\.\)"):
        model(images)


def test_no_sample_may_lose_every_input(images, token_ids):
    model = mmzoo.create(f"cnn+lstm({TINY_TEXT})/concat", num_classes=3)
    with pytest.raises(InputError, match=r"sample\(s\) \[1\]"):
        model(image=images, text=token_ids,
              present={"image": torch.tensor([True, False]), "text": torch.tensor([True, False])})


def test_modality_dropout_is_training_only(images, token_ids):
    model = mmzoo.create(f"cnn+lstm({TINY_TEXT})/concat", num_classes=3, modality_dropout=0.9)
    model.train()
    feats, present = model.encode(image=images.repeat(50, 1, 1, 1), text=token_ids.repeat(50, 1))
    stacked = torch.stack(list(present.values()))
    assert stacked.any(0).all()  # never every input of a sample
    assert not stacked.all()  # some inputs were dropped
    model.eval()
    _, present = model.encode(image=images, text=token_ids)
    assert all(mask.all() for mask in present.values())
    with pytest.raises(InputError, match="modality_dropout"):
        mmzoo.create("cnn+cnn/concat", modality_dropout=1.0)


def test_processor_turns_raw_inputs_into_model_inputs(tmp_path):
    from PIL import Image

    model = mmzoo.create(f"cnn+lstm({TINY_TEXT})/concat", num_classes=3).eval()
    path = tmp_path / "img.png"
    Image.fromarray(np.full((20, 24, 3), 200, dtype=np.uint8)).save(path)
    batch = model.processor(
        image=[np.zeros((40, 30), dtype=np.uint8), Image.new("RGB", (50, 50)), str(path)],
        text=["a red car", "", "ÜNICODE text ✓"],
    )
    assert batch["image"].shape == (3, 3, 32, 32)
    assert batch["text"]["input_ids"].dtype == torch.long
    assert batch["text"]["attention_mask"][1].sum() == 0  # the empty text
    assert model(**batch).shape == (3, 3)
    model.processor.fit_text(["a red car", "a blue bus", "the red bus"] * 20)
    fitted = model.processor(text=["a red car"])["text"]["input_ids"]
    assert fitted.shape[1] < batch["text"]["input_ids"].shape[1]  # merges learned
    with pytest.raises(InputError, match="does not exist"):
        model.processor(image=[str(tmp_path / "nope.png")])
    with pytest.raises(InputError, match="unknown input"):
        model.processor(audio=[1])


def test_timm_processor_uses_the_data_config():
    model = mmzoo.create("test_resnet+lstm/concat")
    batch = model.processor(image=[np.zeros((10, 10, 3), dtype=np.uint8)])
    config = model.encoders["image"].data_config()
    assert batch["image"].shape[1:] == config["input_size"]


def test_timm_kwargs_pass_through_and_tokens():
    model = mmzoo.create("test_vit(img_size=32)+lstm/attention", num_classes=2)
    out = model.encoders["image"](torch.randn(2, 3, 32, 32))
    assert out.tokens.shape[0] == 2 and out.tokens.shape[2] == model.encoders["image"].token_features
    assert "img_size=32" in model.name


def test_timm_pretrained_from_local_safetensors(tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("test_resnet", num_classes=7)
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    model = mmzoo.create(f"test_resnet(pretrained={str(tmp_path / 'w.safetensors')!r})+cnn/concat")
    backbone = model.encoders["image"].backbone.state_dict()
    expected = source.state_dict()
    assert backbone and all(torch.equal(v, expected[k]) for k, v in backbone.items())
    assert "pretrained" not in model.name  # weight sources stay out of the name
    with pytest.raises(mmzoo.errors.WeightsError, match="pickle"):
        mmzoo.create(f"test_resnet(pretrained={str(tmp_path / 'w.pth')!r})+cnn/concat")


def test_presets_and_name_errors():
    model = mmzoo.create("survey", num_classes=10)
    assert model.name.startswith("cnn(") and "+lstm(" in model.name and "/concat(" in model.name
    with pytest.raises(NameSyntaxError):
        mmzoo.create("cnn+lstm")
    with pytest.raises(mmzoo.errors.UnknownNameError, match="did you mean 'survey'"):
        mmzoo.create("survy")


def test_seed_parity_survey_model_overfits_a_batch():
    """The survey's CNN + LSTM + concat + softmax, Adam, cross-entropy."""
    torch.manual_seed(0)
    model = mmzoo.create("survey", num_classes=10)
    images = torch.randn(8, 3, 32, 32)
    ids = torch.randint(1, 300, (8, 6))
    labels = torch.arange(8) % 10
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(image=images, text=ids), labels)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first > 2.0 and loss.item() < 0.1
    probs = model.eval()(image=images, text=ids).softmax(-1)
    assert (probs.argmax(-1) == labels).all()


def test_cli_list_and_create(tmp_path, capsys):
    from mmzoo.cli import main

    assert main(["list", "fusions"]) == 0
    assert "concat" in capsys.readouterr().out.split()
    assert main(["list", "encoders", "resnet1*", "--modality", "image"]) == 0
    assert "resnet18" in capsys.readouterr().out.split()
    assert main(["create", f"cnn+lstm({TINY_TEXT})/concat", "--num-classes", "3", "--save", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "encoder[image]" in out and "fusion" in out and "total" in out
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert main(["create", "cnn+lstm/concatt"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_hf_encoder_takes_its_pad_id_from_the_config(tmp_path, images):
    from transformers import RobertaConfig, RobertaModel

    RobertaModel(RobertaConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, pad_token_id=1, max_position_embeddings=40)
                 ).save_pretrained(tmp_path / "tiny-roberta")
    model = mmzoo.create(f"cnn+hf:{tmp_path / 'tiny-roberta'}(pooling='mean')/concat", num_classes=2).eval()
    encoder = model.encoders["text"]
    assert encoder.pad_token_id == 1
    assert not hasattr(encoder.model, "pooler") or encoder.model.pooler is None  # never-trained pooler skipped
    ids = torch.tensor([[0, 5, 6, 2, 1, 1], [0, 7, 2, 1, 1, 1]])
    mask = ids != 1
    assert torch.equal(model(image=images, text=ids),
                       model(image=images, text={"input_ids": ids, "attention_mask": mask}))
    model(image=images, text=ids).sum().backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)


def test_packed_recurrent_encoders_are_visible_to_the_flop_counter(token_ids):
    from torch.utils.flop_counter import FlopCounterMode

    encoder = mmzoo.create(f"lstm({TINY_TEXT})/mean").encoders["text"].eval()
    x, _ = encoder.prepare_input(token_ids, "text")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(x)
    steps = int((token_ids != 0).sum())  # 6 + 3 real tokens
    assert counter.get_total_flops() == steps * 2 * 4 * 16 * (16 + 16)
