"""Few-shot adaptation on VidTAB (the Video Task Adaptation Benchmark of VideoEval, arXiv 2407.06491).

- ``tasks``: the task registry and the reader of the VidTAB layout (and of a user's own tasks);
- ``split``: K-shot fold sampling (``zeroi2v fewshot-split``);
- ``suite``: the offline synthetic suite in the same layout;
- ``methods``: what one result row trains (ZeroI2V, linear probe, full fine-tuning, zero-shot ...);
- ``features``: the frozen backbone's cached frame features (linear probe and zero-shot in seconds);
- ``run``: ``zeroi2v fewshot``, one resumable result row per (task, shots, fold, method), on
  ``zeroi2v.rows``;
- ``aggregate``: mean ± std over folds, the mean over tasks, the Markdown table and the plot.
"""
