package tapapi

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The discovery documents. The API server's availability check GETs
// /apis/tap.mesh.dev/v1alpha1 and marks the APIService Available only on
// a 2xx; kubectl reads all three when it builds its discovery cache, and
// fails every command that needs discovery when a group answers badly.

// tapKind is the kind of every tap resource, as Linkerd's tap.linkerd.io
// names it: there are no Tap objects, only streams.
const tapKind = "Tap"

var groupVersion = metav1.GroupVersionForDiscovery{GroupVersion: GroupVersion, Version: Version}

func apiGroup() metav1.APIGroup {
	return metav1.APIGroup{
		TypeMeta:         metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"},
		Name:             Group,
		Versions:         []metav1.GroupVersionForDiscovery{groupVersion},
		PreferredVersion: groupVersion,
	}
}

func apiGroupList() metav1.APIGroupList {
	g := apiGroup()
	g.TypeMeta = metav1.TypeMeta{}
	return metav1.APIGroupList{
		TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"},
		Groups:   []metav1.APIGroup{g},
	}
}

// apiResourceList lists each tappable kind and its tap subresource, with
// the watch verb only: no list, get or delete, so neither the garbage
// collector nor the namespace controller ever asks this API for objects.
func apiResourceList() metav1.APIResourceList {
	list := metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: GroupVersion,
	}
	for _, r := range resources {
		namespaced := r.Plural != "namespaces"
		// No short names: kubectl would find "ns", "po", "deploy" in two
		// groups and warn on every `kubectl get ns` of the cluster.
		list.APIResources = append(list.APIResources,
			metav1.APIResource{
				Name: r.Plural, SingularName: r.Singular,
				Namespaced: namespaced, Kind: tapKind, Verbs: metav1.Verbs{Verb},
			},
			metav1.APIResource{
				Name:       r.Plural + "/" + Subresource,
				Namespaced: namespaced, Kind: tapKind, Verbs: metav1.Verbs{Verb},
			})
	}
	return list
}
