"""Zero-shot paragraph-to-video retrieval on ActivityNet Captions (val split)."""

_base_ = "../msrvtt/config.py"

train_file = "${available_corpus.anet_ret_train}"
test_file = dict(test="${available_corpus.anet_ret_val}")
stop_key = "test/"
is_paragraph_retrieval = True
max_txt_l = 150
