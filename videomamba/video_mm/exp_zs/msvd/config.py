"""Zero-shot text-video retrieval on MSVD (test split; several captions per video)."""

_base_ = "../msrvtt/config.py"

train_file = "${available_corpus.msvd_ret_train}"
test_file = dict(test="${available_corpus.msvd_ret_test}")
max_txt_l = 64
