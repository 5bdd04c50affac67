"""Zero-shot text-video retrieval on LSMDC (1,000-clip test split)."""

_base_ = "../msrvtt/config.py"

train_file = "${available_corpus.lsmdc_ret_train}"
test_file = dict(test="${available_corpus.lsmdc_ret_test_1000}")
max_txt_l = 96
