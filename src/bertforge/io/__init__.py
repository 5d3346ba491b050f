"""Files in and out: `readers` (every input format, one error format), `datasets` (labelled tables, CoNLL,
SQuAD), `settings_files` (the files a model folder or a run keeps its settings in) and `atomic` (every output,
written so that a failure leaves the old file intact). None imports torch, so commands that only
read and write text stay fast to start."""
