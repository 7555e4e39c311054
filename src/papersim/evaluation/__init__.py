"""Measuring: judged sets, trec_eval metrics, the systems compared, paired statistics, reports."""
