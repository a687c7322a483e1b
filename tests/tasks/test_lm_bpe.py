"""The LM task's tokenizers: bytes, and a byte-level BPE trained on the task's own stories."""

import pytest
import torch

from kernelattn.data import BPETokenizer, ByteTokenizer, TextCorpus, build_tokenizer, generate_stories, split_text
from kernelattn.models import build_model
from kernelattn.tasks import LMTask, build_task

TEXT = generate_stories(150, seed=5)


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(TEXT, 400)


def test_bpe_round_trip_and_token_bytes(bpe):
    tb = bpe.token_bytes()
    for text in [TEXT[:3000], "Zoë — naïve café 😀\n\n\ttabs  and   spaces\x00\x7f", ""]:
        ids = bpe.encode(text)
        assert bpe.decode(ids) == text
        assert b"".join(tb[i] for i in ids) == text.encode("utf-8")  # each id's bytes, in order, are the text
    assert len(bpe.encode(TEXT[:3000])) < 3000 * 0.6  # 144 merges already compress the stories
    byte = ByteTokenizer()
    assert byte.decode(byte.encode("héllo")) == "héllo" and byte.vocab_size == 256


def test_bpe_training_is_deterministic_and_respects_vocab_size(bpe):
    again = BPETokenizer.train(TEXT, 400)
    assert again.fingerprint() == bpe.fingerprint() and again.encode(TEXT[:500]) == bpe.encode(TEXT[:500])
    assert bpe.vocab_size == 400 and max(bpe.encode(TEXT)) == 399
    assert BPETokenizer.train(TEXT, 300).vocab_size == 300
    assert BPETokenizer.train(TEXT[:2000], 5000).vocab_size < 5000  # a short text runs out of pairs


def test_lm_task_bpe_vocab_split_and_file(tmp_path):
    t = LMTask(seq_len=32, n_stories=80, n_eval=4, tokenizer="bpe", vocab_size=320)
    assert t.vocab_size == 320 and t.tokenizer.kind == "bpe"
    assert all(int(ids.max()) < 320 for ids in t.corpus.splits.values())
    # the tokenizer saw the training part only; the same construction gives the same ids
    train_text, val_text = split_text(generate_stories(80, seed=1000), 32)
    assert t.tokenizer.fingerprint() == BPETokenizer.train(train_text, 320).fingerprint()
    assert torch.equal(t.corpus.splits["val"], torch.tensor(t.tokenizer.encode(val_text), dtype=torch.int32))
    u = LMTask(seq_len=32, n_stories=80, n_eval=4, tokenizer="bpe", vocab_size=320)
    assert torch.equal(u.corpus.splits["train"], t.corpus.splits["train"])
    f = tmp_path / "run" / "tokenizer.json"
    a = LMTask(seq_len=32, n_stories=80, tokenizer="bpe", vocab_size=320, tokenizer_file=str(f))
    assert f.exists()
    b = LMTask(seq_len=32, n_stories=80, tokenizer="bpe", tokenizer_file=str(f))  # loaded, size from the file
    assert b.tokenizer.fingerprint() == a.tokenizer.fingerprint()
    with pytest.raises(ValueError, match="has 320 ids, not vocab_size=512"):
        LMTask(seq_len=32, n_stories=80, tokenizer="bpe", vocab_size=512, tokenizer_file=str(f))


def test_tokenizer_option_errors():
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        build_task("lm", seq_len=32, n_stories=40, tokenizer="gpt2")
    with pytest.raises(ValueError, match="drop vocab_size=512"):
        build_task("lm", seq_len=32, n_stories=40, vocab_size=512)
    with pytest.raises(ValueError, match="must be > 256"):
        build_tokenizer("bpe", TEXT, 200)


def test_byte_corpus_unchanged():
    c = TextCorpus(TEXT, 16)
    assert c.vocab_size == 256 and c.splits["train"].dtype == torch.uint8
    assert bytes(c.splits["train"].tolist()) + bytes(c.splits["val"].tolist()) == TEXT.encode()


def test_recall_mask_on_bpe_tokens(bpe):
    text = "Once Zorbina met Quelp. Then Zorbina ran."
    ids = torch.tensor(bpe.encode(text))
    x, y = ids[:-1][None], ids[1:][None]
    tb = bpe.token_bytes()
    m = LMTask.recall_mask(x, y, tb)[0]
    marked = [tb[i] for i in y[0][m].tolist()]
    second = text.index("Zorbina", 10)
    # the marked tokens are contiguous and cover "orbina" of the second Zorbina, nothing of the first
    joined = b"".join(marked)
    assert b"orbina" in joined and joined in text.encode()[second - 1:second + len("Zorbina")]
    starts = [sum(len(tb[i]) for i in ids[:k + 1].tolist()) for k in range(len(y[0]))]  # start byte of target k
    assert all(starts[k] >= second - 1 for k in m.nonzero().flatten().tolist())


def test_model_trains_a_few_steps_on_bpe_tokens():
    torch.manual_seed(0)
    t = LMTask(seq_len=64, n_stories=80, n_eval=8, tokenizer="bpe", vocab_size=320)  # ~200-byte windows repeat names
    model = build_model("memory_mosaics", vocab_size=t.vocab_size, n_layer=1, n_head=2, n_embd=32, block_size=64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(15):
        x, y = t.sample("train", 8, torch.Generator().manual_seed(step))
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(torch.log(torch.tensor(320.0)).item(), abs=0.5)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5  # unigram statistics already drop ~0.7 nats
    model.eval()
    recs = {r["metric"]: r["value"] for r in t.final_metrics(model, "cpu") if "position" not in r}
    assert {"val_loss", "val_loss_per_byte", "recall_loss"} <= set(recs)
    assert recs["val_loss_per_byte"] < recs["val_loss"]  # a token is more than one byte
