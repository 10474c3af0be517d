-- dms_laion_wide: one row per joined row, the LAION wide table.
-- joined left join DMD (one row per subset and hash) on (subset, hash).
with joined as (

    select * from laion.ods_laion_joined

),

-- LAION repeats SAMPLE_IDs and, rarely, hashes: keep one base row per hash, by a total order.
base_per_hash as (

    select *
    from (
        select
            *,
            row_number() over (
                partition by subset, hash
                order by file_name nulls last, sample_id nulls last, url nulls last, text nulls last, license nulls last, nsfw nulls last
            ) as base_rank
        from laion.dmd_image_path_suffix_aesthetics
    )
    where base_rank = 1

),

subset_defaults as (

    select * from cfg_subsets

),

final as (

    select
        base_per_hash.sample_id,
        joined.url,
        joined.text,
        joined.width,
        joined.height,
        joined.similarity,
        joined.hash,
        joined.punsafe,
        joined.pwatermark,
        base_per_hash.image_suffix,
        base_per_hash.license,
        base_per_hash.nsfw,
        base_per_hash.aesthetic_score,
        coalesce(joined.language, subset_defaults.default_language) as language,
        joined.file_name,
        base_per_hash.image_path,
        joined.subset
    from joined
    left join base_per_hash
        on joined.subset = base_per_hash.subset
        and joined.hash = base_per_hash.hash
    left join subset_defaults
        on joined.subset = subset_defaults.subset

)

select * from final
