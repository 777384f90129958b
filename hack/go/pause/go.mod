module sovereign-ai.eu/hack/pause

go 1.26.0
