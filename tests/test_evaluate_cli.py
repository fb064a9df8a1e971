"""`synthmed evaluate` end to end on tiny generated image sets (sanity tests with known answers)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.image.fid import FrechetInceptionDistance

from datamodules.phantom_generator import write_phantom_tree
from lightning_modules.classifier import ClassifierModule
from synthmed.evaluate.cli import main
from synthmed.evaluate.extractors import AutoencoderExtractor, ClassifierExtractor, extract_features
from synthmed.evaluate.images import load_image_set
from synthmed.evaluate.results import find, read_results

SIZE = 32
PER_CLASS = 8


def save_classifier_ckpt(path: Path, size: int = SIZE, seed: int = 0) -> Path:
    """A randomly initialised ResNet-18 ClassifierModule saved as a Lightning-style checkpoint."""
    torch.manual_seed(seed)
    module = ClassifierModule(arch="resnet18", num_classes=3, in_channels=1, image_size=size,
                              class_names=["benign", "malignant", "normal"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": lightning.__version__}, path)
    return path


def write_noise_tree(root: Path, per_class: int, size: int, seed: int = 0, flat: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    for cls in ("benign", "malignant", "normal"):
        folder = root if flat else root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"{cls}_noise_{i}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("evaluate")
    return {
        "ckpt": save_classifier_ckpt(base / "clf.ckpt"),
        "a": write_phantom_tree(base / "half_a", PER_CLASS, SIZE, seed=0),
        "b": write_phantom_tree(base / "half_b", PER_CLASS, SIZE, seed=1),
        "train": write_phantom_tree(base / "train", PER_CLASS, SIZE, seed=2),
        "noise": write_noise_tree(base / "noise", PER_CLASS, SIZE),
        "base": base,
    }


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    """Default run directories (logs/evaluate/<time>) land in the test's tmp dir, not the repository."""
    monkeypatch.chdir(tmp_path)


def run(capsys, *args: str) -> tuple[int, list[str], str]:
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out.strip().splitlines(), captured.err


def evaluate_json(capsys, data, fake, *extra, real=None) -> tuple[dict, Path]:
    rc, lines, err = run(capsys, "--real", real or data["a"], "--fake", fake, "--extractor",
                         f"classifier:{data['ckpt']}", *extra)
    assert rc == 0, err
    assert lines[-1].startswith("run_dir: ")
    out = Path(lines[-1].removeprefix("run_dir: "))
    return json.loads((out / "evaluation.json").read_text()), out


@pytest.fixture(scope="module")
def a_vs(data):
    """a_vs("b") / a_vs("noise"): the record of --real half_a --fake <that set>, computed once per module."""
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                rc = main(["--real", str(data["a"]), "--fake", str(data[name]),
                           "--extractor", f"classifier:{data['ckpt']}", "--out", str(data["base"] / f"a_vs_{name}")])
            assert rc == 0
            run_dir = Path(out.getvalue().strip().splitlines()[-1].removeprefix("run_dir: "))
            cache[name] = json.loads((run_dir / "evaluation.json").read_text())
        return cache[name]

    return get


def key(record: dict, base: str) -> float:
    """The pooled value of a feature-space metric (FID's value is kept in the JSON even when unreliable)."""
    return find(read_results(record), base, record["extractor"]["name"]).value


def px(record: dict, base: str, definition: str = ""):
    """A pooled metric without feature space: its value, or the reason it has none."""
    result = find(read_results(record), base, definition)
    return result.value if result.value is not None else {"computed": False, "reason": result.reason}


def test_a_set_against_itself_scores_fid_zero_and_ssim_one(capsys, data):
    record, out = evaluate_json(capsys, data, data["a"], "--out", data["base"] / "self")
    name = record["extractor"]["name"]
    assert name.startswith("classifier:resnet18@") and len(name.split("@")[1]) == 8
    feats = extract_features(ClassifierExtractor(data["ckpt"]), load_image_set(data["a"], SIZE, 1).images)
    scale = float(torch.cov(feats.T.double()).trace())
    assert abs(key(record, "fid")) < 1e-3 * scale
    assert key(record, "precision") == key(record, "recall") == key(record, "coverage") == 1.0
    assert px(record, "ssim", "nearest_real") == pytest.approx(1.0, abs=1e-6)
    assert px(record, "ms_ssim", "nearest_real") == pytest.approx(1.0, abs=1e-6)
    assert px(record, "psnr", "nearest_real") == float("inf")  # identical pairs ("inf" in strict JSON, read back)
    assert px(record, "ssim", "random_pairs") < 0.9
    assert px(record, "lpips") == {"computed": False,
                                          "reason": "not computed: no local weights (pass --lpips-weights)"}
    assert px(record, "clip_score")["computed"] is False
    assert px(record, "near_copy_fraction")["computed"] is False
    assert record["settings"]["pixel"]["ms_ssim"]["kernel_size"] == 3  # 32 px: small-image settings, recorded
    assert record["inputs"]["real"]["n_images"] == 3 * PER_CLASS  # images only
    assert record["inputs"]["real"]["skipped_mask_files"] == 0  # make-phantoms writes masks to <tree>_masks/
    md = (out / "evaluation.md").read_text()
    assert f"`kid[{name}]`" in md and "kernel_size=3, betas=(0.2, 0.3, 0.5)" in md
    assert "not computed: no local weights" in md


def test_two_halves_score_far_better_than_noise(a_vs):
    halves, noise = a_vs("b"), a_vs("noise")
    assert key(halves, "fid") * 10 < key(noise, "fid")
    assert key(halves, "kid") < key(noise, "kid")
    for metric in ("precision", "density", "coverage"):
        assert key(halves, metric) > key(noise, metric) + 0.5, metric
    # recall only orders: widely scattered noise features make large k-NN balls that cover some reals
    assert key(halves, "recall") > key(noise, "recall")
    assert px(halves, "ssim", "random_pairs") > px(noise, "ssim", "random_pairs")


def test_fid_equals_torchmetrics_fed_with_the_extractor_itself(data, a_vs):
    record = a_vs("b")
    extractor = ClassifierExtractor(data["ckpt"])

    class OnImages(torch.nn.Module):  # torchmetrics calls the feature module on the raw batches
        num_features = extractor.model.num_features

        def forward(self, images):
            return extractor(extractor.prepare(images))

    metric = FrechetInceptionDistance(feature=OnImages())
    with torch.inference_mode():
        metric.update(load_image_set(data["a"], SIZE, 1).images, real=True)
        metric.update(load_image_set(data["b"], SIZE, 1).images, real=False)
    assert key(record, "fid") == pytest.approx(float(metric.compute()), rel=1e-4)


def test_copy_audit_flags_copies_of_training_images_and_not_noise(capsys, data, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    train_files = sorted(p for p in Path(data["train"]).rglob("*.png") if "_mask" not in p.name)
    for p in train_files[::4]:  # 6 exact copies
        shutil.copy(p, fake / f"copy_{p.name}")
    write_noise_tree(fake, 2, SIZE, seed=5, flat=True)  # 6 noise images
    real = write_phantom_tree(tmp_path / "real", 14, SIZE, seed=3)  # 42 held-out reals: p-values can reach 0.025
    record, out = evaluate_json(capsys, data, fake, "--train", data["train"], real=real)
    audit = record["copy_audit"]
    assert audit["fake_files_identical_to_train"] == 6 and audit["real_files_identical_to_train"] == 0
    assert audit["method"].startswith("conformal") and "Meehan, Chaudhuri & Dasgupta" in audit["reference"]
    for space, result in audit["representations"].items():
        closest = result["closest_pairs"]
        assert len(closest) == 8 and all(Path(c["fake"]).name.startswith("copy_") for c in closest[:6]), space
        assert all(c["distance"] < 1e-6 for c in closest[:6]) and closest[6]["distance"] > 1e-3
        assert (out / result["closest_pairs_png"]).is_file()
    assert key(record, "near_copy_fraction") == 0.5  # the 6 copies, not the 6 noise images
    assert px(record, "near_copy_fraction", "pixel-highpass") == 0.5
    # half exact copies (closer than every held-out image), half noise (farther): C_T balances out near 0
    assert abs(key(record, "data_copying_z")) < 1
    assert Image.open(out / "closest_pairs_pixel-highpass.png").size[0] > 8 * 96
    md = (out / "evaluation.md").read_text()
    assert "Meehan, Chaudhuri & Dasgupta" in md and "data_copying_z" in md


def test_out_dir_is_never_overwritten_and_errors_name_the_option(capsys, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, lines, _ = run(capsys, "--real", data["a"], "--fake", data["b"], "--extractor", f"classifier:{data['ckpt']}",
                       "--out", out, "--max-images", "12")
    assert rc == 0 and lines[-1] == f"run_dir: {tmp_path / 'out_1'}" and (out / "keep.txt").read_text() == "mine"
    assert json.loads((tmp_path / "out_1" / "evaluation.json").read_text())["inputs"]["fake"]["n_images"] == 12
    # the same folder as --real and --fake with --max-images: the same subset, so FID ~ 0 and SSIM 1
    rc, lines, _ = run(capsys, "--real", data["a"], "--fake", data["a"], "--extractor", f"classifier:{data['ckpt']}",
                       "--max-images", "12")
    record = json.loads((Path(lines[-1].removeprefix("run_dir: ")) / "evaluation.json").read_text())
    assert rc == 0 and px(record, "ssim", "nearest_real") == pytest.approx(1.0, abs=1e-6)

    rc, _, err = run(capsys, "--real", data["a"], "--fake", data["b"], "--out", tmp_path / "x")
    assert rc == 2 and "--extractor classifier:<ckpt>" in err and not (tmp_path / "x").exists()
    rc, _, err = run(capsys, "--real", data["a"], "--fake", data["b"], "--extractor", "inception")
    assert rc == 2 and "--inception-weights FILE" in err and "nothing is downloaded" in err
    rc, _, err = run(capsys, "--real", data["a"], "--fake", data["b"], "--extractor", "classifier:/no/such.ckpt")
    assert rc == 2 and "no such checkpoint" in err
    rc, _, err = run(capsys, "--real", data["a"], "--fake", data["b"], "--extractor", "resnet")
    assert rc == 2 and "not understood" in err
    mixed = tmp_path / "mixed"
    write_noise_tree(mixed, 1, SIZE)
    shutil.copy(next(mixed.rglob("*.png")), mixed / "top.png")
    rc, _, err = run(capsys, "--real", data["a"], "--fake", mixed, "--extractor", f"classifier:{data['ckpt']}",
                     "--out", tmp_path / "y")
    assert rc == 2 and "--fake" in err and "mixes images" in err and not (tmp_path / "y").exists()
    with pytest.raises(SystemExit):
        run(capsys, "--real", tmp_path / "missing", "--fake", data["b"])
    assert "--real" in capsys.readouterr().err


def test_autoencoder_extractor_names_its_feature_space(capsys, data):
    from lightning_modules.autoencoder import AutoencoderModule

    module = AutoencoderModule(in_channels=1, image_size=SIZE, latent_channels=2, block_out_channels=(8, 8),
                               norm_num_groups=4, mid_block_attention=False)
    ckpt = data["base"] / "ae.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": lightning.__version__}, ckpt)
    rc, lines, err = run(capsys, "--real", data["a"], "--fake", data["a"], "--extractor", f"autoencoder:{ckpt}")
    assert rc == 0, err
    record = json.loads((Path(lines[-1].removeprefix("run_dir: ")) / "evaluation.json").read_text())
    assert record["extractor"]["name"].startswith("autoencoder:kl-f2@")
    assert record["extractor"]["latent_channels"] == 2
    feats = extract_features(AutoencoderExtractor(ckpt), load_image_set(data["a"], SIZE, 1).images)
    assert feats.shape == (3 * PER_CLASS, 2 * 16 * 16)  # posterior mean, flattened
    assert abs(key(record, "fid")) < 1e-3 * float(torch.cov(feats.T.double()).trace())
    assert key(record, "precision") == 1.0


def test_lpips_and_clip_score_from_local_weights(capsys, data, tmp_path):
    import torchvision

    weights = tmp_path / "squeezenet1_1-b8a52dc0.pth"  # random weights in the file name torchvision expects
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), weights)
    clip_dir = write_tiny_clip(tmp_path / "clip")
    record, _ = evaluate_json(capsys, data, data["a"], "--lpips-weights", weights, "--lpips-net", "squeeze",
                              "--clip-model", clip_dir)
    assert px(record, "lpips", "nearest_real") == pytest.approx(0.0, abs=1e-6)
    assert px(record, "lpips", "random_pairs") > 0.0
    assert isinstance(px(record, "clip_score"), float)
    assert record["settings"]["clip_score"]["prompts"] == "--clip-prompt 'a medical image of {class}'"
    assert torch.hub.get_dir() != str(tmp_path)  # the temporary hub dir is restored


def write_tiny_clip(folder: Path) -> Path:
    """A randomly initialised 1-layer CLIP with a real (letter-level) BPE tokenizer, saved locally."""
    import string

    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(string.ascii_lowercase) + [
        c + "</w>" for c in string.ascii_lowercase]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])
    layer = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(text_config=dict(vocab_size=len(tokens), max_position_embeddings=32, bos_token_id=0,
                                         eos_token_id=1, pad_token_id=1, **layer),
                        vision_config=dict(image_size=32, patch_size=8, **layer), projection_dim=8)
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=tokenizer).save_pretrained(folder)
    return folder


def write_random_inception_weights(path: Path) -> Path:
    """torchmetrics' FID Inception-v3 with random weights, saved where --inception-weights can read it."""
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception
    from torchmetrics.image.fid import NoTrainInceptionV3

    empty = path.with_suffix(".empty")
    torch.save({}, empty)
    load = fidelity_inception.FeatureExtractorInceptionV3.load_state_dict
    fidelity_inception.FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None
    try:
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                 feature_extractor_weights_path=str(empty))
    finally:
        fidelity_inception.FeatureExtractorInceptionV3.load_state_dict = load
    # Data-dependent BatchNorm statistics from one batch of random images: without them the random
    # network's activations shrink layer by layer into subnormal floats (tiny features, very slow CPU math).
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
            module.reset_running_stats()
    torch.nn.Module.train(net, True)
    with torch.no_grad():
        net(torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.slow
def test_inception_extractor_from_a_local_file_matches_torchmetrics_fid(capsys, data, tmp_path):
    pytest.importorskip("torch_fidelity")
    weights = write_random_inception_weights(tmp_path / "inception.pth")
    rc, lines, err = run(capsys, "--real", data["a"], "--fake", data["noise"], "--extractor", "inception",
                         "--inception-weights", weights, "--max-images", "8", "--k", "2", "--image-size", "64")
    assert rc == 0, err
    record = json.loads((Path(lines[-1].removeprefix("run_dir: ")) / "evaluation.json").read_text())
    assert find(read_results(record), "fid", "inception") is not None and record["extractor"]["weights"] == str(weights)
    metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights))
    with torch.inference_mode():
        for folder, real in ((data["a"], True), (data["noise"], False)):
            images = load_image_set(folder, 64, 3, max_images=8, seed=0).images
            metric.update(images, real=real)
    expected = float(metric.compute())
    assert expected > 1e-3  # non-degenerate features, so the comparison means something
    assert px(record, "fid", "inception") == pytest.approx(expected, rel=1e-3)
