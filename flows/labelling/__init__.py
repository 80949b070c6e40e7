"""The labelling loop (issue #36): choose items worth labelling from captured traffic or a file (`selection`),
queue them in Label Studio with the champion's predictions as pre-annotations, and bring finished annotations
back as a new data batch (`loop`), over Label Studio's HTTP API (`studio`); `spans` maps between Label Studio's
character spans and our tokens/IOB2 tags."""
