"""Text models: the word-level tokenizer (pure Python), the bundled movie-review set, and the BERT-style
encoder classifiers the text demo trains (built with tf-keras, like the digits example)."""
