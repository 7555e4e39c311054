"""The pages people browse: search, a paper with its similar papers, champion against challenger, the registry.

A layer beside the `papersim` command, on top of papersim.retrieval (search_text, similar_papers) and
papersim.lifecycle (the registry, the versions, the drift history): it renders what those answer and holds
no search logic of its own. `papersim web` starts it (papersim.web.app.serve).
"""
