"""Zero-shot paragraph-to-video retrieval on DiDeMo (val and test splits, first 30 s of each video)."""

_base_ = "../msrvtt/config.py"

train_file = "${available_corpus.didemo_ret_train}"
test_file = dict(val="${available_corpus.didemo_ret_val}", test="${available_corpus.didemo_ret_test}")
test_types = ["val", "test"]
stop_key = "val/"
is_paragraph_retrieval = True
trimmed30 = True
max_txt_l = 64
